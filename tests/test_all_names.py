"""``__all__`` is true in every module of kdcore, medkd and facekd: each listed name exists, none twice, and the
names one package module imports from another are in the other's ``__all__`` (its public surface)."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGES = ("kdcore", "medkd", "facekd")
SOURCE_ROOTS = {"kdcore": REPO / "shared" / "kdcore", "medkd": REPO / "medkd", "facekd": REPO / "facekd"}

# Modules whose __all__ lacks names that other package modules import from them (expected failures, strict).
IMPORTED_BUT_NOT_IN_ALL: set[str] = set()


def all_modules() -> list[str]:
    names = []
    for package in PACKAGES:
        root = importlib.import_module(package)
        names += [package, *(m.name for m in pkgutil.walk_packages(root.__path__, package + "."))]
    return sorted(names)


MODULES = all_modules()


def lazily_missing(module_name: str, name: str) -> bool:
    """kdcore's front door lists kdcore.vertical's ``Vertical``, written on another branch: skip only that name
    until the module exists."""
    return (module_name, name) == ("kdcore", "Vertical") and importlib.util.find_spec("kdcore.vertical") is None


@pytest.mark.parametrize("module_name", MODULES)
def test_all_names_exist(module_name):
    module = importlib.import_module(module_name)
    assert hasattr(module, "__all__"), f"{module_name} has no __all__"
    listed = list(module.__all__)
    assert len(listed) == len(set(listed)), f"{module_name}.__all__ lists a name twice"
    missing = [n for n in listed if not lazily_missing(module_name, n) and not hasattr(module, n)]
    assert missing == [], f"{module_name}.__all__ names what it does not have"


def module_of(path: Path) -> tuple[str, bool]:
    for package, root in SOURCE_ROOTS.items():
        if path.is_relative_to(root):
            parts = [package, *path.relative_to(root).with_suffix("").parts]
            is_package = parts[-1] == "__init__"
            return ".".join(parts[:-1] if is_package else parts), is_package
    raise ValueError(path)


def imported_names() -> dict[str, dict[str, set[str]]]:
    """target module -> public name -> the package modules that import it with ``from target import name``."""
    found: dict[str, dict[str, set[str]]] = {}
    for root in SOURCE_ROOTS.values():
        for path in root.rglob("*.py"):
            importer, is_package = module_of(path)
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(node, ast.ImportFrom):
                    continue
                if node.level:
                    base = importer.split(".")[: None if is_package else -1]
                    base = base[: len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.split(".")[0] not in PACKAGES:
                    continue
                for alias in node.names:
                    if not alias.name.startswith("_") and alias.name != "*":
                        found.setdefault(target, {}).setdefault(alias.name, set()).add(importer)
    return found


IMPORTED = imported_names()


@pytest.mark.parametrize("module_name", sorted(IMPORTED))
def test_names_imported_across_modules_are_public(module_name, request):
    if module_name in IMPORTED_BUT_NOT_IN_ALL:
        request.applymarker(pytest.mark.xfail(reason=f"{module_name}: fixed on the structural branch",
                                              strict=True))
    module = importlib.import_module(module_name)
    public = set(getattr(module, "__all__", ()))
    private = {name: sorted(importers) for name, importers in IMPORTED[module_name].items()
               if name not in public and not is_submodule(module_name, name)}
    assert private == {}, f"{module_name}: imported by other modules but not in __all__"


def is_submodule(module_name: str, name: str) -> bool:
    return importlib.util.find_spec(f"{module_name}.{name}") is not None if hasattr(
        importlib.import_module(module_name), "__path__") else False
