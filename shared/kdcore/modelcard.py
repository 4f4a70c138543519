"""Model cards (``MODEL_CARD.md``) written from a run's files: data, folds, metrics, verification, latency.

Everything comes from files (``dataset.json``, ``audit.json``, ``folds.json``, ``report.json``, the export's
parity checks and latency); a missing file is said, never guessed. The vertical packages add what only
they know: the task, the metric names, intended use and limits.

Example:
    >>> print(metrics_section(None, "student", ["accuracy"]).splitlines()[0])
    ## Metrics
"""

from __future__ import annotations

import math
import os
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

from .atomic import atomic_write_text
from .export import read_run_file, run_items

__all__ = ["render_model_card", "write_model_card", "data_section", "folds_section", "metrics_section",
           "parity_section", "latency_section", "source_section", "format_value"]


def format_value(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(format_value(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def source_section(source: Mapping[str, Any]) -> str:
    commit = source.get("git_commit")
    if not commit:
        commit_text = "unknown (no environment.json)"
    else:
        commit_text = commit[:12] + (" (uncommitted changes)" if source.get("git_dirty") else "")
    rows = [("recipe", source.get("recipe")), ("run folder", source.get("run")), ("fold", source.get("fold")),
            ("model", f"{source.get('model')} ({source.get('role') or 'role unknown'})"),
            ("fold manifest", source.get("manifest")), ("code commit", commit_text),
            ("weights kept", source.get("kept")), ("best epoch", source.get("best_epoch")),
            ("validation score",
             f"{format_value(source.get('best_score'))} ({source.get('monitor') or 'monitor unknown'})")]
    return "## Source\n\n" + _table(["", ""], rows)


def data_section(run_dir: str | os.PathLike, group_key: str = "patient", label_key: str = "label",
                 group_name: str = "patients") -> str:
    """Counts from ``dataset.json`` (items, labels, groups) and the findings of ``audit.json``."""
    run_dir = Path(run_dir)
    config = read_run_file(run_dir, "config.yaml") or {}
    data_cfg = config.get("data", {}) if isinstance(config, dict) else {}
    lines = ["## Data", ""]
    if isinstance(data_cfg, dict) and data_cfg.get("format"):
        subset = f", subset `{data_cfg['subset']}`" if data_cfg.get("subset") else ""
        lines.append(f"Dataset format: `{data_cfg['format']}`{subset}.")
    items = run_items(run_dir)
    if not items:
        lines.append("`dataset.json` is missing from the run folder: item counts unknown.")
    else:
        groups = {str(i.get(group_key)) for i in items if i.get(group_key) is not None}
        labels = Counter(str(i.get(label_key)) for i in items if i.get(label_key) is not None)
        lines.append(f"{len(items)} items" + (f" from {len(groups)} {group_name}" if groups else "") + ".")
        if labels:
            lines += ["", _table(["label", "items"], sorted(labels.items()))]
    audit = read_run_file(run_dir, "audit.json")
    lines.append("")
    if audit is None:
        lines.append("`audit.json` is missing: the integrity gate's findings are unknown.")
    else:
        findings = audit.get("problems", audit.get("findings", [])) if isinstance(audit, dict) else audit
        excluded = audit.get("excluded", []) if isinstance(audit, dict) else []
        severity = Counter(str(f.get("severity", "unknown")) for f in findings if isinstance(f, dict))
        text = ", ".join(f"{n} {s}" for s, n in sorted(severity.items())) or "none"
        n_excluded = len(excluded) if isinstance(excluded, list) else excluded
        lines.append(f"Integrity audit findings: {text}; excluded items: {n_excluded}.")
    return "\n".join(lines)


def folds_section(run_dir: str | os.PathLike, fold: int, group_name: str = "patients") -> str:
    manifest = read_run_file(run_dir, "folds.json")
    if not manifest:
        return "## Folds\n\n`folds.json` is missing: the cross-validation split is unknown."
    folds = manifest.get("folds", [])
    rows = [(f.get("fold"), len(f.get("train", [])), len(f.get("val", [])), len(f.get("test", []))) for f in folds]
    text = ["## Folds", "",
            f"{manifest.get('n_folds', len(folds))}-fold cross-validation grouped by {group_name} (manifest "
            f"`{manifest.get('sha', 'unknown')}`, seed {manifest.get('seed', 'unknown')}): no {group_name.rstrip('s')} "
            f"is in two parts of a fold. This export is fold {fold}: trained on its train part, model "
            f"selection on its validation part, its test part never seen in training.", "",
            _table(["fold", f"train {group_name}", f"val {group_name}", f"test {group_name}"], rows)]
    return "\n".join(text)


def _ci(value: Any) -> str:
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return f"[{format_value(value[0])}, {format_value(value[1])}]"
    if isinstance(value, Mapping):
        low, high = value.get("low", value.get("lower")), value.get("high", value.get("upper"))
        return f"[{format_value(low)}, {format_value(high)}]"
    return format_value(value)


def metrics_section(report: Mapping[str, Any] | None, model: str, preferred: Sequence[str],
                    calibration: Sequence[str] = ("ece",)) -> str:
    """Metrics with 95% intervals from ``report.json`` (``models.<model>.summary.<metric>``)."""
    lines = ["## Metrics", ""]
    summary = (((report or {}).get("models") or {}).get(model) or {}).get("summary") if report else None
    if not summary:
        reason = "`report.json` is missing" if report is None else f"`report.json` has no summary for {model!r}"
        return "\n".join(lines + [f"{reason}: build it with the `report` command, then export again. No "
                                  "performance claim can be made from this card."])
    names = [m for m in preferred if m in summary]
    names += sorted(m for m in summary if m not in preferred and m not in calibration)
    rows = [(name, summary[name].get("mean"), summary[name].get("std"), _ci(summary[name].get("ci95")))
            for name in names if isinstance(summary[name], Mapping)]
    lines += ["Out-of-fold test results over all folds (mean, standard deviation over folds, 95% interval "
              "as given by the report):", "", _table(["metric", "mean", "std", "95% CI"], rows), "",
              "### Calibration", ""]
    found = [(n, summary[n].get("mean"), summary[n].get("std"), _ci(summary[n].get("ci95")))
             for n in calibration if isinstance(summary.get(n), Mapping)]
    lines.append(_table(["metric", "mean", "std", "95% CI"], found) if found else
                 "The report has no calibration metric (" + ", ".join(calibration) + ").")
    return "\n".join(lines)


def parity_section(checks: Sequence[Mapping[str, Any]], extra: str = "") -> str:
    rows = [(c["artefact"], c["n_inputs"], c["inputs"], c["max_abs_diff"], c["mean_abs_diff"],
             c.get("tolerance", c.get("rule", "n/a")),  # an int8 model is judged by its own rule (export.quantize)
             "n/a" if c.get("argmax_agreement") is None else f"{c['argmax_agreement']:.0%}",
             "yes" if c["passed"] else "NO") for c in checks]
    header = ["artefact", "inputs", "kind", "max abs diff", "mean abs diff", "tolerance", "same argmax", "passed"]
    lines = ["## Export verification", "",
             "Each exported file was run on the same inputs as the PyTorch model (as one batch and one at a "
             "time); numbers are the absolute differences of the outputs (`parity.json`).", "",
             _table(header, rows)]
    notes = {c.get("note") for c in checks if c.get("note")}
    lines += [f"\nNote: {n}" for n in sorted(notes)]
    if extra:
        lines += ["", extra]
    return "\n".join(lines)


def latency_section(latency: Mapping[str, Any]) -> str:
    machine = latency.get("machine", {})
    rows = [(name, latency[name]["median_ms"], latency[name]["p25_ms"], latency[name]["p75_ms"])
            for name in ("onnxruntime", "onnxruntime_int8", "torchscript", "pytorch") if name in latency]
    return "\n".join([
        "## Latency", "",
        f"Batch of 1, input {latency.get('input_shape')}, {latency.get('threads', 'default')} thread(s) per runtime, "
        f"measured at export on this machine: {machine.get('processor', 'unknown CPU')} with "
        f"{machine.get('cpu_count')} cores. Preprocessing (decoding, resizing) is not included; other "
        "machines, thread counts and batch sizes give other numbers.", "",
        _table(["runtime", "median ms", "p25 ms", "p75 ms"], rows)])


def render_model_card(title: str, summary: str, sections: Sequence[str]) -> str:
    body = [f"# {title}", "", summary.strip(), ""]
    for section in sections:
        if section:
            body += [section.strip(), ""]
    return "\n".join(body).rstrip() + "\n"


def write_model_card(path: str | os.PathLike, text: str) -> Path:
    path = Path(path)
    atomic_write_text(path, text)
    return path
