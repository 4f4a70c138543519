"""Generic report plots (matplotlib, Agg canvas, no pyplot global state); every function returns PNG bytes.

Figures are drawn on a private ``Figure`` + ``FigureCanvasAgg``, so plotting never touches the user's
interactive backend and works in threads and headless jobs. PNG metadata is stripped so a rebuilt report
gives the same bytes.

Example:
    >>> png = line_plot({"fold 0": ([0, 1, 2], [1.0, 0.6, 0.5])}, xlabel="epoch", ylabel="loss")
    >>> png[:4] == b"\\x89PNG"
    True
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["new_figure", "figure_png", "line_plot", "bar_plot", "heatmap", "training_curves", "curve_keys"]

DPI = 90


def new_figure(width: float = 5.0, height: float = 3.6, nrows: int = 1, ncols: int = 1) -> tuple[Figure, Any]:
    """A figure with an Agg canvas and its axes (an array when ``nrows * ncols > 1``)."""
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=True)
    return fig, axes


def figure_png(fig: Figure, dpi: int = DPI) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()


def _finite_xy(x: Sequence[float], y: Sequence[float | None]) -> tuple[np.ndarray, np.ndarray]:
    xs = np.asarray(x, dtype=float)
    ys = np.asarray([np.nan if v is None else v for v in y], dtype=float)
    if xs.shape != ys.shape:
        raise ValueError(f"x and y differ in shape: {xs.shape} vs {ys.shape}")
    keep = np.isfinite(xs) & np.isfinite(ys)
    return xs[keep], ys[keep]


def line_plot(series: Mapping[str, tuple[Sequence[float], Sequence[float | None]]], xlabel: str = "",
              ylabel: str = "", title: str | None = None, diagonal: bool = False,
              xlim: tuple[float, float] | None = None, ylim: tuple[float, float] | None = None,
              step: bool = False, size: tuple[float, float] = (5.0, 3.6), ax: Any = None) -> bytes | None:
    """One line per named series (None/NaN points are left out); ``diagonal`` adds y = x (ROC, calibration).

    With ``ax`` the lines go into that axes and nothing is returned (for multi-panel figures).
    """
    fig = None
    if ax is None:
        fig, ax = new_figure(*size)
    for name, (x, y) in series.items():
        xs, ys = _finite_xy(x, y)
        if xs.size == 0:
            continue
        if step:
            ax.step(xs, ys, where="post", label=name, linewidth=1.4)
        elif xs.size == 1:
            ax.plot(xs, ys, "o", label=name)
        else:
            ax.plot(xs, ys, label=name, linewidth=1.4)
    if diagonal:
        lo, hi = xlim or (0.0, 1.0)
        ax.plot([lo, hi], [lo, hi], linestyle="--", color="grey", linewidth=0.8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    if xlim:
        ax.set_xlim(*xlim)
    if ylim:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
    if series and len(series) <= 12:
        ax.legend(fontsize=7, loc="best")
    return figure_png(fig) if fig is not None else None


def bar_plot(categories: Sequence[str], series: Mapping[str, Sequence[float | None]],
             intervals: Mapping[str, Sequence[Sequence[float] | None]] | None = None, ylabel: str = "",
             title: str | None = None, size: tuple[float, float] = (6.0, 3.6), ylim: tuple[float, float] | None = None,
             rotate_labels: bool = False) -> bytes:
    """Grouped bars: one group per category, one bar per series; ``intervals`` draws [lo, hi] error bars."""
    fig, ax = new_figure(*size)
    n_series = max(1, len(series))
    width = 0.8 / n_series
    positions = np.arange(len(categories), dtype=float)
    for j, (name, values) in enumerate(series.items()):
        if len(values) != len(categories):
            raise ValueError(f"series {name!r} has {len(values)} values for {len(categories)} categories")
        heights = np.array([np.nan if v is None else v for v in values], dtype=float)
        x = positions - 0.4 + width * (j + 0.5)
        yerr = None
        if intervals and name in intervals:
            lower, upper = [], []
            for h, ci in zip(heights, intervals[name]):
                ok = ci is not None and all(c is not None for c in ci) and math.isfinite(h)
                lower.append(max(0.0, h - ci[0]) if ok else 0.0)
                upper.append(max(0.0, ci[1] - h) if ok else 0.0)
            yerr = np.array([lower, upper])
        ax.bar(x, np.nan_to_num(heights), width=width * 0.95, label=name, yerr=yerr, capsize=2)
    ax.set_xticks(positions)
    ax.set_xticklabels(categories, rotation=60 if rotate_labels else 0, fontsize=7 if rotate_labels else 9,
                       ha="right" if rotate_labels else "center")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    if ylim:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3, axis="y")
    if len(series) > 1:
        ax.legend(fontsize=7)
    return figure_png(fig)


def heatmap(matrix: Sequence[Sequence[float]], row_labels: Sequence[str], col_labels: Sequence[str],
            title: str | None = None, xlabel: str = "", ylabel: str = "", normalize_rows: bool = False,
            size: tuple[float, float] = (4.2, 3.6)) -> bytes:
    """Annotated matrix (e.g. a confusion matrix: rows true, columns predicted); colours by row share when
    ``normalize_rows`` (so rare classes are as visible as common ones), annotations keep the counts."""
    values = np.asarray(matrix, dtype=float)
    if values.shape != (len(row_labels), len(col_labels)):
        raise ValueError(f"matrix shape {values.shape} does not match {len(row_labels)} x {len(col_labels)} labels")
    shade = values
    if normalize_rows:
        totals = values.sum(axis=1, keepdims=True)
        shade = np.divide(values, totals, out=np.zeros_like(values), where=totals > 0)
    fig, ax = new_figure(*size)
    image = ax.imshow(shade, cmap="Blues", vmin=0, vmax=max(float(shade.max()), 1e-12))
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(len(col_labels)))
    ax.set_xticklabels(col_labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(row_labels)))
    ax.set_yticklabels(row_labels, fontsize=8)
    threshold = shade.max() / 2 if shade.size else 0
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            text = f"{int(values[i, j])}" if float(values[i, j]).is_integer() else f"{values[i, j]:.2f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if shade[i, j] > threshold else "black")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    return figure_png(fig)


def curve_keys(records: Sequence[Mapping[str, Any]], max_keys: int = 4) -> list[str]:
    """The keys worth a training-curve panel: ``loss`` first, then ``val_loss``, then other ``val_*`` keys."""
    numeric = set()
    for record in records:
        for key, value in record.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                numeric.add(key)
    keys = [k for k in ("loss", "val_loss") if k in numeric]
    keys += sorted(k for k in numeric if k.startswith("val_") and k not in keys)
    return keys[:max_keys]


def training_curves(records: Sequence[Mapping[str, Any]], keys: Sequence[str] | None = None,
                    title: str | None = None) -> bytes | None:
    """Per-epoch curves, one panel per key and one line per fold, from log.jsonl / metrics.csv records.

    Records need ``fold`` and ``epoch``; ``split == "swa"`` records (the averaged model's final evaluation)
    are drawn as a star at their epoch. Returns None when there is nothing to draw.
    """
    records = [r for r in records if "epoch" in r]
    keys = list(keys) if keys is not None else curve_keys(records)
    if not records or not keys:
        return None
    epochs: dict[Any, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    swa: dict[Any, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for record in sorted(records, key=lambda r: (str(r.get("fold")), r["epoch"])):
        target = swa if record.get("split") == "swa" else epochs
        for key in keys:
            value = record.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                target[record.get("fold")][key].append((record["epoch"], float(value)))
    fig, axes = new_figure(3.6 * len(keys), 3.0, 1, len(keys))
    axes = np.atleast_1d(axes)
    for ax, key in zip(axes, keys):
        for fold in sorted(set(epochs) | set(swa), key=str):
            points = epochs[fold].get(key, [])
            if points:
                xs, ys = zip(*points)
                line = ax.plot(xs, ys, linewidth=1.2, label=f"fold {fold}")[0]
                colour = line.get_color()
            else:
                colour = None
            for x, y in swa[fold].get(key, []):
                ax.plot([x], [y], marker="*", markersize=9, color=colour, linestyle="none")
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10, y=1.04)
    return figure_png(fig)
