"""What an audit report is to the CLI and the integrity gate: a list of problems, some of them blocking.

Example:
    >>> from dataclasses import dataclass, field
    >>> from types import SimpleNamespace as P
    >>> @dataclass
    ... class Report(AuditFindings):
    ...     problems: list = field(default_factory=list)
    >>> report = Report([P(severity="blocking"), P(severity="warning")])
    >>> len(report.blocking), len(report.warnings)
    (1, 1)
"""

from __future__ import annotations

from typing import Any

__all__ = ["AuditFindings"]


class AuditFindings:
    """Mixin for an audit report dataclass with a ``problems`` list (each with a ``severity``)."""

    problems: list[Any]

    @property
    def blocking(self) -> list[Any]:
        """Problems that stop a run (unless the recipe allows leaving the items out)."""
        return [p for p in self.problems if p.severity == "blocking"]

    @property
    def warnings(self) -> list[Any]:
        return [p for p in self.problems if p.severity == "warning"]
