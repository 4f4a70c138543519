"""Classification metrics from targets (N,) and class probabilities (N, C): fast, no plotting.

Used for inner validation (every epoch) and by the report's bootstrap (thousands of resamples), so the
hot path is vectorised numpy: the confusion matrix is one ``bincount`` and one-vs-rest AUC is the
Mann-Whitney rank statistic, both equal to scikit-learn's ``confusion_matrix`` / ``roc_auc_score``
(tests check this) at a fraction of the cost. ROC curves for plots come from ``sklearn.metrics.roc_curve``.

Definitions (one-vs-rest for class c, counts from the confusion matrix):
    sensitivity (recall) = TP / (TP + FN)       undefined (None) when c is absent from targets
    specificity          = TN / (TN + FP)       undefined when every target is c
    precision            = TP / (TP + FP)       undefined when c is never predicted
    F1                   = 2 TP / (2 TP + FP + FN)
    AUC                  = P(score of a c-image > score of a non-c image), ties count 1/2; undefined when
                           c is absent or the only class
Macro values average over all classes and are undefined (None) when any class value is undefined: an
average over a silently shrinking set of classes would not be comparable between folds or resamples.
ECE is the top-label expected calibration error with 15 equal-width confidence bins ``(k/15, (k+1)/15]``
(confidence 0 goes to the first bin): ``sum_b n_b / N * |accuracy_b - mean confidence_b|``.

Example:
    >>> import numpy as np
    >>> probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    >>> m = classification_metrics([0, 1, 1, 1], probs, ["A", "B"])
    >>> m["accuracy"], m["per_class"]["B"]["sensitivity"]
    (0.75, 0.6666666666666666)
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from scipy.stats import rankdata

__all__ = ["ECE_BINS", "MACRO_METRICS", "CLASS_METRICS", "check_inputs", "confusion", "ovr_auc",
           "reliability_bins", "roc_curves", "classification_metrics",
           "flat_metrics"]

ECE_BINS = 15
MACRO_METRICS = ("accuracy", "sensitivity", "specificity", "precision", "f1", "auc", "ece")
CLASS_METRICS = ("sensitivity", "specificity", "precision", "f1", "auc")


def check_inputs(targets, probs, n_classes: int | None = None, atol: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(targets int64 (N,), probs float64 (N, C))``; rows of ``probs`` must sum to 1."""
    t = np.asarray(targets)
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or t.ndim != 1 or len(t) != len(p):
        raise ValueError(f"targets must be (N,) and probs (N, C), got {t.shape} and {p.shape}")
    if n_classes is not None and p.shape[1] != n_classes:
        raise ValueError(f"probs has {p.shape[1]} columns for {n_classes} classes")
    if len(t) == 0:
        raise ValueError("no predictions to evaluate")
    if not np.issubdtype(t.dtype, np.integer):
        if not np.all(np.equal(np.mod(t, 1), 0)):
            raise ValueError("targets must be integer class indices")
        t = t.astype(np.int64)
    if t.min() < 0 or t.max() >= p.shape[1]:
        raise ValueError(f"targets must be in 0..{p.shape[1] - 1}, got range {t.min()}..{t.max()}")
    if not np.isfinite(p).all():
        raise ValueError("probs contain non-finite values")
    sums = p.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > atol)
    if bad.size:
        raise ValueError(f"probs rows must sum to 1 (softmax outputs); row {bad[0]} sums to {sums[bad[0]]:.6f} "
                         f"({bad.size} rows affected)")
    return t.astype(np.int64), p


def confusion(targets: np.ndarray, preds: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, C) counts, rows true class, columns predicted (as ``sklearn.metrics.confusion_matrix``)."""
    return np.bincount(targets * n_classes + preds, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def ovr_auc(positive: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC AUC of ``scores`` for the boolean ``positive`` labels (Mann-Whitney U with average ranks)."""
    positive = np.asarray(positive, bool)
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _top_label(targets: np.ndarray, probs: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == targets).astype(np.float64)
    inner_edges = np.linspace(0.0, 1.0, n_bins + 1)[1:-1]
    bins = np.searchsorted(inner_edges, confidence, side="left")  # (lo, hi] bins
    return confidence, correct, bins


def _ece(t: np.ndarray, p: np.ndarray, n_bins: int) -> float:
    confidence, correct, bins = _top_label(t, p, n_bins)
    counts = np.bincount(bins, minlength=n_bins)
    gap = np.abs(np.bincount(bins, correct, n_bins) - np.bincount(bins, confidence, n_bins))
    # per bin n_b/N * |acc_b - conf_b| = |sum correct - sum confidence| / N
    return float(gap.sum() / counts.sum())


def reliability_bins(targets, probs, n_bins: int = ECE_BINS) -> list[dict[str, Any]]:
    """Reliability-diagram data: per bin its edges, mean confidence, accuracy and count (None when empty)."""
    t, p = check_inputs(targets, probs)
    confidence, correct, bins = _top_label(t, p, n_bins)
    counts = np.bincount(bins, minlength=n_bins)
    conf_sum = np.bincount(bins, confidence, n_bins)
    acc_sum = np.bincount(bins, correct, n_bins)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return [{"lower": float(edges[b]), "upper": float(edges[b + 1]), "count": int(counts[b]),
             "confidence": float(conf_sum[b] / counts[b]) if counts[b] else None,
             "accuracy": float(acc_sum[b] / counts[b]) if counts[b] else None} for b in range(n_bins)]


def roc_curves(targets, probs, classes: Sequence[str]) -> dict[str, dict[str, list[float]] | None]:
    """One-vs-rest ROC points per class for plotting (None where the AUC is undefined)."""
    from sklearn.metrics import roc_curve

    t, p = check_inputs(targets, probs, len(classes))
    curves: dict[str, dict[str, list[float]] | None] = {}
    for c, name in enumerate(classes):
        positive = t == c
        if positive.all() or not positive.any():
            curves[name] = None
            continue
        fpr, tpr, _ = roc_curve(positive, p[:, c])
        curves[name] = {"fpr": fpr.tolist(), "tpr": tpr.tolist()}
    return curves


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den > 0 else None


def _macro(values: list[float | None]) -> float | None:
    return None if any(v is None for v in values) else float(np.mean(values))


def classification_metrics(targets, probs, classes: Sequence[str], n_bins: int = ECE_BINS) -> dict[str, Any]:
    """All report metrics of one prediction set.

    Args:
        targets: (N,) class indices.
        probs: (N, C) probabilities (rows sum to 1) in the order of ``classes``.
        classes: class names.

    Returns:
        ``{"n", "accuracy", "sensitivity", "specificity", "precision", "f1", "auc", "ece"`` (macro where
        per class), ``"per_class": {name: {"sensitivity", "specificity", "precision", "f1", "auc", "support"}},
        "confusion_matrix": [[...]]}``; undefined values are None.
    """
    t, p = check_inputs(targets, probs, len(classes))
    n_classes = len(classes)
    preds = p.argmax(axis=1)
    cm = confusion(t, preds, n_classes)
    n = int(cm.sum())
    tp = np.diag(cm).astype(float)
    support = cm.sum(axis=1).astype(float)
    predicted = cm.sum(axis=0).astype(float)
    fn, fp = support - tp, predicted - tp
    tn = n - tp - fn - fp
    per_class = {}
    for c, name in enumerate(classes):
        per_class[name] = {
            "sensitivity": _ratio(tp[c], tp[c] + fn[c]),
            "specificity": _ratio(tn[c], tn[c] + fp[c]),
            "precision": _ratio(tp[c], tp[c] + fp[c]),
            "f1": _ratio(2 * tp[c], 2 * tp[c] + fp[c] + fn[c]),
            "auc": ovr_auc(t == c, p[:, c]),
            "support": int(support[c]),
        }
    result: dict[str, Any] = {"n": n, "accuracy": float(tp.sum() / n)}
    for metric in CLASS_METRICS:
        result[metric] = _macro([per_class[name][metric] for name in classes])
    result["ece"] = _ece(t, p, n_bins)
    result["per_class"] = per_class
    result["confusion_matrix"] = cm.tolist()
    return result


def flat_metrics(metrics: dict[str, Any]) -> dict[str, float | None]:
    """Macro metrics plus ``"<class>/<metric>"`` per class values, flat (for bootstrap samples)."""
    flat = {k: metrics[k] for k in MACRO_METRICS}
    for name, values in metrics["per_class"].items():
        for metric in CLASS_METRICS:
            flat[f"{name}/{metric}"] = values[metric]
    return flat
