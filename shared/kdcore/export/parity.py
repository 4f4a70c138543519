"""The parity rule: an exported artefact must compute what the PyTorch model does on the same inputs.

``max |exported - pytorch| <= atol + rtol * max |pytorch|``, at the full batch and one input at a time (the
batch dimension is dynamic); classifiers must also keep every input's top class. Results go to ``parity.json``.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..atomic import atomic_write_json
from ..errors import KDError
from .run_models import read_run_file
from .runtime import Runner

__all__ = ["ATOL", "RTOL", "ParityCheck", "compare_outputs", "check_parity", "write_parity", "top_two_gap"]

ATOL = 1e-4   # parity: max |exported - pytorch| <= ATOL + RTOL * max |pytorch|
RTOL = 1e-4


@dataclass
class ParityCheck:
    """How closely an exported artefact reproduces the PyTorch model on the same inputs."""

    artefact: str
    n_inputs: int
    inputs: str                 # "real" or "synthetic"
    max_abs_diff: float
    mean_abs_diff: float
    tolerance: float            # the bound max_abs_diff had to meet: atol + rtol * max |reference|
    atol: float
    rtol: float
    passed: bool
    argmax_agreement: float | None = None  # classification: share of inputs with the same top class
    argmax_near_ties: int | None = None    # disagreements where the reference's top-2 gap <= 2 * tolerance
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        text = (f"{self.artefact}: max |diff| {self.max_abs_diff:.3g}, mean {self.mean_abs_diff:.3g} on "
                f"{self.n_inputs} {self.inputs} inputs (tolerance {self.tolerance:.3g})")
        if self.argmax_agreement is not None:
            text += f", argmax agreement {self.argmax_agreement:.0%}"
        return text + (" - ok" if self.passed else " - FAILED")

    def raise_if_failed(self) -> None:
        if not self.passed:
            raise KDError(f"parity check failed for {self.summary()}")


def top_two_gap(outputs: np.ndarray) -> np.ndarray:
    """Per input, how far the top output is above the second (inf with one output): how decided a classifier is.

    Example:
        >>> top_two_gap(np.array([[0.0, 2.0, 1.5], [3.0, 0.0, 0.0]])).tolist()
        [0.5, 3.0]
    """
    if outputs.shape[1] < 2:
        return np.full(len(outputs), np.inf)
    ordered = np.sort(outputs, axis=1)
    return ordered[:, -1] - ordered[:, -2]


def compare_outputs(reference: np.ndarray, outputs: np.ndarray, artefact: str, *, classification: bool,
                    inputs: str = "real", atol: float = ATOL, rtol: float = RTOL, note: str = "") -> ParityCheck:
    """Compare an artefact's outputs with the reference's (same inputs, same order)."""
    reference = np.asarray(reference, dtype=np.float64)
    outputs = np.asarray(outputs, dtype=np.float64)
    if reference.shape != outputs.shape:
        raise KDError(f"{artefact}: output shape {outputs.shape} differs from PyTorch's {reference.shape}")
    diff = np.abs(outputs - reference)
    finite = bool(np.isfinite(outputs).all())
    tolerance = atol + rtol * float(np.abs(reference).max(initial=0.0))
    max_diff = float(diff.max(initial=0.0)) if finite else float("inf")
    passed = finite and max_diff <= tolerance
    agreement = ties = None
    if classification:
        same = outputs.argmax(axis=1) == reference.argmax(axis=1)
        near = top_two_gap(reference) <= 2 * tolerance
        agreement, ties = float(same.mean()) if len(same) else 1.0, int((~same & near).sum())
        passed = passed and bool(same.all())  # strict; near ties are counted to explain a failure
    return ParityCheck(artefact, int(len(reference)), inputs, max_diff, float(diff.mean()) if finite else float("inf"),
                       tolerance, atol, rtol, passed, agreement, ties, note)


def check_parity(reference: Runner, artefacts: Mapping[str, Runner], inputs: np.ndarray, *, classification: bool,
                 inputs_kind: str = "real", atol: float = ATOL, rtol: float = RTOL, note: str = "",
                 raise_on_failure: bool = True) -> list[ParityCheck]:
    """Run every artefact on ``inputs`` as one batch and one input at a time; compare with ``reference``.

    Raises :class:`KDError` naming the artefact and the numbers when one fails (``raise_on_failure``).
    """
    expected = reference(inputs)
    checks = []
    for name, run in artefacts.items():
        batched = run(inputs)
        single = np.concatenate([run(inputs[i:i + 1]) for i in range(len(inputs))])
        worst = max((compare_outputs(expected, out, name, classification=classification, inputs=inputs_kind,
                                     atol=atol, rtol=rtol, note=note) for out in (batched, single)),
                    key=lambda c: (not c.passed, c.max_abs_diff))
        checks.append(worst)
    if raise_on_failure:
        for check in checks:
            check.raise_if_failed()
    return checks


def write_parity(out_dir: str | os.PathLike, checks: Sequence[ParityCheck],
                 extra: Mapping[str, Any] | None = None) -> Path:
    """``parity.json``: the rule, and each artefact's numbers (merged with checks already in the file)."""
    path = Path(out_dir) / "parity.json"
    existing = read_run_file(out_dir, "parity.json") or {}
    entries = {c["artefact"]: c for c in existing.get("checks", [])}
    entries.update({c.artefact: c.to_dict() for c in checks})
    data = {"rule": "max |exported - pytorch| <= atol + rtol * max |pytorch| on the same inputs, at the full batch "
                    "and one input at a time (the worse is kept); classification also needs the same argmax "
                    "for every input",
            "passed": all(c["passed"] for c in entries.values()), "checks": list(entries.values())}
    merged = {**existing.get("extra", {}), **(extra or {})}
    if merged:
        data["extra"] = merged
    atomic_write_json(path, data)
    return path
