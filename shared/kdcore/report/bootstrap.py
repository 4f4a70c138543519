"""Many metrics from one patient-level bootstrap: every metric of a resample is computed on the same patients.

:func:`kdcore.stats.group_bootstrap` resamples whole groups (patients, subjects) for one scalar metric.
Reports need a dozen metrics per model (macro and per class), so :func:`bootstrap_samples` drives it with a
metric that records a whole dict per resample: one resampling, consistent intervals, one pass of work.
Because the resampling depends only on ``seed`` and the sorted group ids, two models evaluated on the same
rows with the same seed see the same resampled patients: their sample-wise differences are a paired bootstrap.

Example:
    >>> import numpy as np
    >>> correct = np.array([1.0, 1.0, 0.0, 1.0])
    >>> acc = lambda i: {"acc": float(correct[i].mean())}
    >>> est, samples = bootstrap_samples(acc, 4, ["a", "a", "b", "c"], n_boot=50)
    >>> est["acc"], len(samples)
    (0.75, 50)
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import numpy as np

from ..stats import group_bootstrap, paired_group_bootstrap

__all__ = ["bootstrap_samples", "paired_bootstrap_samples", "difference_samples", "percentile_ci",
           "summarize_samples"]

Values = Mapping[str, float | None]


def _defined(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def bootstrap_samples(compute: Callable[[np.ndarray], Values], n_items: int, groups: Sequence[str],
                      n_boot: int = 1000, seed: int = 0) -> tuple[dict, list[dict]]:
    """``(compute(all items), [compute(resample) for each of n_boot group resamples])``."""
    recorded: list[dict] = []

    def record(indices: np.ndarray) -> float:
        recorded.append(dict(compute(indices)))
        return 0.0

    group_bootstrap(record, n_items, groups, n_boot=n_boot, seed=seed)
    if len(recorded) != n_boot + 1:  # group_bootstrap evaluates the full set once, then each resample
        raise RuntimeError(f"expected {n_boot + 1} evaluations from group_bootstrap, got {len(recorded)}")
    return recorded[0], recorded[1:]


def paired_bootstrap_samples(compute_a: Callable[[np.ndarray], Values], compute_b: Callable[[np.ndarray], Values],
                             n_items: int, groups: Sequence[str], n_boot: int = 1000, seed: int = 0
                             ) -> tuple[dict, list[dict]]:
    """Differences ``a - b`` per key, both computed on the same resampled groups each time (a paired bootstrap)."""
    a_values: list[dict] = []
    b_values: list[dict] = []

    def metric_a(indices: np.ndarray) -> float:
        a_values.append(dict(compute_a(indices)))
        return 0.0

    def metric_b(indices: np.ndarray) -> float:
        b_values.append(dict(compute_b(indices)))
        return 0.0

    paired_group_bootstrap(metric_a, metric_b, n_items, groups, n_boot=n_boot, seed=seed)
    differences = difference_samples(a_values, b_values)
    return differences[0], differences[1:]


def difference_samples(a: Sequence[Values], b: Sequence[Values]) -> list[dict]:
    """Sample-wise ``a - b`` for every key both hold (None where either is undefined)."""
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in number: {len(a)} vs {len(b)}")
    out = []
    for x, y in zip(a, b):
        out.append({k: (x[k] - y[k] if _defined(x[k]) and _defined(y.get(k)) else None) for k in x if k in y})
    return out


def percentile_ci(samples: Sequence[Values], key: str, level: float = 0.95) -> list[float] | None:
    """Percentile interval of ``key`` over the samples where it is defined; None without any."""
    values = [s[key] for s in samples if _defined(s.get(key))]
    if not values:
        return None
    alpha = (1 - level) / 2
    return [float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))]


def summarize_samples(samples: Sequence[Values], keys: Sequence[str], level: float = 0.95
                      ) -> tuple[dict[str, list[float] | None], dict[str, int]]:
    """Per key: the interval, and how many resamples left it undefined (only keys with any)."""
    intervals = {k: percentile_ci(samples, k, level) for k in keys}
    undefined = {k: n for k in keys if (n := sum(not _defined(s.get(k)) for s in samples))}
    return intervals, undefined
