"""KD recipe sweeps and student search on Optuna (see :mod:`kdcore.sweep.search`).

The verticals declare a :class:`SweepAdapter` (their recipe, teachers, training and validation metrics);
``medkd sweep`` / ``facekd sweep`` are built from it by :func:`kdcore.cli.add_sweep_command`.
"""

from .search import SweepAdapter, SweepOptions, make_storage, run_sweep
from .space import Param, SweepSpace, check_space, load_space, parse_space

__all__ = ["SweepAdapter", "SweepOptions", "run_sweep", "make_storage", "Param", "SweepSpace", "parse_space",
           "check_space", "load_space"]
