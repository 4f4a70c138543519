"""A package's front door: the names a user starts from, importable from the package and loaded on first use
(PEP 562), so ``import medkd`` stays cheap (no torch until one of them is touched).

Example:
    >>> import types, sys
    >>> package = types.ModuleType("toy_package")
    >>> sys.modules["toy_package"] = package
    >>> package.__all__, package.__getattr__, package.__dir__ = front_door("toy_package", {"dumps": "json"})
    >>> package.dumps([1])
    '[1]'
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Mapping

__all__ = ["front_door", "installed_version"]


def installed_version() -> str:
    """The version of the installed ``kdvision`` distribution: pyproject.toml is the one place it is written."""
    from importlib.metadata import PackageNotFoundError, version  # slow to import: only when asked

    try:
        return version("kdvision")
    except PackageNotFoundError as err:  # a source tree that was never `pip install -e .`d
        raise ImportError("kdvision is not installed, so it has no version: run `pip install -e .` in the "
                          "repository") from err


def front_door(package: str, owners: Mapping[str, str], eager: tuple[str, ...] = ()
               ) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """``(__all__, __getattr__, __dir__)`` for ``package``: each public name of ``owners`` (name -> owning module,
    relative to the package or absolute) is imported on first access and cached; ``__version__`` is the
    distribution's. ``eager`` names are already in the package's namespace (listed in ``__all__`` too)."""
    names = [*owners, *eager, "__version__"]

    def __getattr__(name: str) -> Any:
        if name == "__version__":
            value: Any = installed_version()
        elif name in owners:
            value = getattr(importlib.import_module(owners[name], package), name)
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        setattr(sys.modules[package], name, value)  # later look-ups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return list(names)

    return names, __getattr__, __dir__
