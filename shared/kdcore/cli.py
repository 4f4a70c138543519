"""Command-line plumbing shared by the ``medkd`` and ``facekd`` console scripts."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Sequence

from .errors import KDError

__all__ = ["add_run_arguments", "recipe_overrides", "run_main", "check_resume"]


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", type=Path, help="recipe YAML (see pipelines/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe key, e.g. --set student.temperature=2 (repeatable)")
    parser.add_argument("--data-root", type=Path, help="dataset folder (sets data.root)")
    parser.add_argument("--out", type=Path, help="run folder (default runs/<recipe name>-<timestamp>)")
    parser.add_argument("--folds", help="only these folds, e.g. 0,1 or 2-4 (merge later with `report`)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out: finished folds are kept, an interrupted model "
                             "restarts from its last checkpoint")
    parser.add_argument("--device", help="override runtime.device (auto, cpu, cuda, cuda:1, mps)")


def recipe_overrides(args: argparse.Namespace) -> dict:
    extra = {}
    if args.data_root is not None:
        extra["data.root"] = str(args.data_root)
    if args.device:
        extra["runtime.device"] = args.device
    return extra


def check_resume(out: Path, resume: bool) -> None:
    """Refuse to write into a folder holding another run unless ``--resume`` says to continue it."""
    if (out / "config.yaml").exists() and not resume:
        raise KDError(f"{out}: already holds a run; pass --resume to continue it (or to add folds), "
                      "or choose another --out")
    if resume and not (out / "config.yaml").exists():
        raise KDError(f"{out}: --resume given but there is no run to continue in this folder")


def run_main(build_parser: Callable[[], argparse.ArgumentParser], argv: Sequence[str] | None = None) -> int:
    """Parse, dispatch to ``args.handler``, and turn user errors into one line on stderr with exit code 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    try:
        result = args.handler(args)
    except KDError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(result or 0)
