"""Uncertainty for reports: bootstrap over patients, paired comparisons, fold summaries.

Images of one patient are not independent, so confidence intervals resample patients (all of a patient's
images together), never single images.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
from scipy import stats as scipy_stats

__all__ = ["group_bootstrap", "paired_group_bootstrap", "mcnemar", "fold_summary"]

Metric = Callable[[np.ndarray], float]


def _group_index(groups: Sequence[str]) -> list[np.ndarray]:
    groups = np.asarray(groups)
    _, inverse = np.unique(groups, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    boundaries = np.flatnonzero(np.diff(inverse[order])) + 1
    return np.split(order, boundaries)


def group_bootstrap(metric: Metric, n_items: int, groups: Sequence[str], n_boot: int = 1000, seed: int = 0,
                    level: float = 0.95) -> dict[str, float | list[float] | int]:
    """Percentile bootstrap CI of ``metric(indices)`` resampling whole groups with replacement.

    ``metric`` receives an index array into the items (images) and returns a float; resamples where it is
    undefined (returns nan, e.g. a class missing) are dropped and counted.

    Example:
        >>> values = np.array([1.0, 1.0, 0.0, 0.0])
        >>> out = group_bootstrap(lambda i: values[i].mean(), 4, ["a", "a", "b", "b"], n_boot=200)
        >>> out["estimate"]
        0.5
    """
    if len(groups) != n_items:
        raise ValueError(f"{len(groups)} group ids for {n_items} items")
    members = _group_index(groups)
    rng = np.random.default_rng(seed)
    estimate = float(metric(np.arange(n_items)))
    samples = []
    for _ in range(n_boot):
        chosen = rng.integers(0, len(members), len(members))
        value = metric(np.concatenate([members[g] for g in chosen]))
        if value is not None and not math.isnan(value):
            samples.append(value)
    alpha = (1 - level) / 2
    ci = [float(np.quantile(samples, alpha)), float(np.quantile(samples, 1 - alpha))] if samples else [math.nan] * 2
    return {"estimate": estimate, "ci": ci, "n_boot": len(samples), "n_dropped": n_boot - len(samples),
            "n_groups": len(members)}


def paired_group_bootstrap(metric_a: Metric, metric_b: Metric, n_items: int, groups: Sequence[str],
                           n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """CI of ``metric_a - metric_b`` on the same resampled patients (a paired comparison)."""
    return group_bootstrap(lambda idx: metric_a(idx) - metric_b(idx), n_items, groups, n_boot, seed, level)


def mcnemar(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> dict[str, float | int]:
    """Exact McNemar test on paired per-image correctness (two-sided binomial test on discordant pairs).

    Images of one patient are not independent, so the p-value is optimistic; reports pair it with the
    patient-level bootstrap CI of the difference.
    """
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if a.shape != b.shape:
        raise ValueError(f"paired arrays differ in shape: {a.shape} vs {b.shape}")
    only_a = int(np.sum(a & ~b))
    only_b = int(np.sum(~a & b))
    discordant = only_a + only_b
    p_value = 1.0 if discordant == 0 else float(scipy_stats.binomtest(only_a, discordant, 0.5).pvalue)
    return {"only_a_correct": only_a, "only_b_correct": only_b, "p_value": p_value}


def fold_summary(values: Sequence[float]) -> dict[str, float | None]:
    """Mean and sample standard deviation over folds (None where undefined)."""
    finite = [v for v in values if v is not None and not math.isnan(v)]
    if not finite:
        return {"mean": None, "std": None}
    return {"mean": float(np.mean(finite)), "std": float(np.std(finite, ddof=1)) if len(finite) > 1 else None}
