"""The report skeleton every vertical shares: read the run folder, one section per model, paired comparisons of
the student with every other model, coverage, protocol, fidelity, then ``report.json``, ``report.html`` and
``report/`` written atomically. A vertical's :class:`ReportTemplate` says how to load its predictions, what a model
section and a comparison hold, and how the page looks.

Example (outline; ``medkd.report`` and ``facekd.report`` are complete ones):
    >>> class MyReport(ReportTemplate):                          # doctest: +SKIP
    ...     model_order, unit = ("teacher", "student"), "patient"
    ...     def load(self, run, name, context): ...
    >>> build_run_report(MyReport(), "runs/demo", n_boot=200)   # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any, Callable

import numpy as np

from ..errors import DataError
from .bootstrap import difference_samples, paired_bootstrap_samples
from .html import HtmlDocument
from .run_inputs import RunInputs, audit_summary, json_safe, read_run, training_event_notes, write_report

__all__ = ["ReportTemplate", "PooledPredictions", "paired_difference_samples", "build_run_report", "protocol_section", "report_n_boot", "LEVEL", "HtmlParts"]

LEVEL = 0.95


@dataclass
class PooledPredictions:
    """One model's out-of-fold predictions pooled over its finished folds, one row per item sorted by id; a
    vertical adds its columns (groups, targets, outputs) as further array fields."""

    name: str
    folds: list[int]
    ids: np.ndarray
    fold_of: np.ndarray

    def subset(self, mask: np.ndarray) -> "PooledPredictions":
        """The rows of ``mask`` (every array field masked alike), with the folds they come from."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update({k: v[mask] for k, v in values.items() if isinstance(v, np.ndarray)})
        values["folds"] = sorted(set(self.fold_of[mask].tolist()))
        return type(self)(**values)

    def paired_with(self, other: "PooledPredictions") -> tuple["PooledPredictions", "PooledPredictions"] | None:
        """Both models' rows of the items both predicted, in the same order (None when they share none)."""
        common = np.intersect1d(self.ids, other.ids)
        if common.size == 0:
            return None
        return self.subset(np.isin(self.ids, common)), other.subset(np.isin(other.ids, common))


def paired_difference_samples(a: PooledPredictions, b: PooledPredictions, sub_a: PooledPredictions,
                              sub_b: PooledPredictions, samples: dict[str, list[dict]],
                              compute: Callable[[PooledPredictions], Callable], groups: np.ndarray, n_boot: int,
                              seed: int) -> list[dict]:
    """Bootstrap samples of ``metric(a) - metric(b)`` over the groups of the items both predicted."""
    if len(sub_a.ids) == len(a.ids) == len(b.ids):
        # Same rows, same groups, same seed: the per-model resamples already pair up.
        return difference_samples(samples[a.name], samples[b.name])
    _, diffs = paired_bootstrap_samples(compute(sub_a), compute(sub_b), len(sub_a.ids), groups, n_boot, seed)
    return diffs


def report_n_boot(run: RunInputs, n_boot: int | None) -> int:
    """Bootstrap resamples: the argument, else ``report.bootstrap`` of the run's config (default 1000)."""
    if n_boot is None:
        n_boot = (run.config.get("report") or {}).get("bootstrap", 1000)
    if not isinstance(n_boot, int) or isinstance(n_boot, bool) or n_boot < 0:
        raise DataError(f"{run.path}: report.bootstrap must be a non-negative integer, got {n_boot!r}")
    return n_boot


def protocol_section(run: RunInputs, unit: str, class_counts: bool = False) -> dict[str, Any]:
    """The folds as the manifest made them: group counts per part, shares, the audit and unfinished folds."""
    manifest = run.manifest
    folds = []
    for f in manifest.folds:
        entry = {"fold": f.fold, "train": len(f.train), "val": len(f.val), "test": len(f.test),
                 "val_share": f.val_share, "test_images": int(sum(f.class_counts.get("test", {}).values())) or None}
        if class_counts:
            entry["class_counts"] = f.class_counts
        folds.append(entry)
    return {"n_folds": manifest.n_folds, "group_name": manifest.group_name, f"{unit}s": manifest.n_groups,
            "images": manifest.n_items, "seed": manifest.seed, "val_fraction": manifest.val_fraction,
            "manifest_sha": manifest.sha, "folds": folds, "audit": audit_summary(run.audit),
            "incomplete": run.incomplete}


class ReportTemplate:
    """What a vertical declares for its report.

    Attributes:
        model_order: the vertical's models in report order (others follow by name).
        unit: what the bootstrap resamples (``patient``, ``subject``).
        compared: the models the student is always compared with (a missing one is listed as unavailable).
        class_counts: whether the protocol lists each fold's class counts.
    """

    model_order: tuple[str, ...] = ()
    unit: str = "group"
    item: str = "item"
    compared: tuple[str, ...] = ()
    class_counts: bool = False

    def context(self, run: RunInputs) -> dict[str, Any]:
        """What every model shares and the report records at its top level (e.g. ``classes``), checked once."""
        return {}

    def settings(self, run: RunInputs, context: dict[str, Any]) -> dict[str, Any]:
        """The vertical's settings beyond ``n_boot``, ``seed``, ``level`` and ``unit``."""
        return {}

    def load(self, run: RunInputs, name: str, context: dict[str, Any]) -> Any:
        """The pooled out-of-fold predictions of model ``name``."""
        raise NotImplementedError

    def model_section(self, data: Any, context: dict[str, Any], missing: list[int], n_boot: int,
                      seed: int) -> tuple[dict[str, Any], list[dict]]:
        """``(section, bootstrap samples)`` of one model."""
        raise NotImplementedError

    def comparison(self, a: Any, b: Any, sub_a: Any, sub_b: Any, context: dict[str, Any],
                   samples: dict[str, list[dict]], n_boot: int, seed: int) -> dict[str, Any]:
        """The paired comparison of model ``a`` (the student) with ``b`` on ``sub_a``/``sub_b``, their rows of the
        items both predicted (see :func:`paired_difference_samples`)."""
        raise NotImplementedError

    def extra_sections(self, run: RunInputs, data: dict[str, Any], context: dict[str, Any], report: dict[str, Any],
                       n_boot: int, seed: int) -> None:
        """Add the vertical's own sections (fidelity, overlays) to ``report`` in place."""

    def render(self, run: RunInputs, report: dict[str, Any], data: dict[str, Any],
               context: dict[str, Any]) -> tuple[str, dict[str, bytes]]:
        """``(html, {file name: png bytes})``."""
        raise NotImplementedError

    def csv_files(self, report: dict[str, Any]) -> dict[str, str]:
        """``report/`` tables: file name -> CSV text."""
        return {}


def build_run_report(template: ReportTemplate, run_dir: str | os.PathLike, n_boot: int | None = None,
                     seed: int = 0) -> dict[str, Any]:
    """Compute a run's report with ``template`` and write ``report/``, ``report.json`` and ``report.html``.

    Every model with a finished fold is reported; ``coverage`` says, per model, which folds are finished and
    which are missing, so a report over some folds never passes for the whole run.
    """
    run = read_run(run_dir, template.model_order)
    if not run.models:
        raise DataError(f"{run.path}: no completed model (no folds/fold_<k>/<model>/done.json); nothing to report")
    n_boot = report_n_boot(run, n_boot)
    context = template.context(run)
    data = {name: template.load(run, name, context) for name in run.models}
    report: dict[str, Any] = {
        "run": {"recipe": run.config.get("name"), "folder": run.path.name},
        "settings": {"n_boot": n_boot, "seed": seed, "level": LEVEL, "unit": template.unit,
                     **template.settings(run, context)},
        **context, "protocol": protocol_section(run, template.unit, template.class_counts), "models": {},
        "comparisons": {}, "notes": [],
    }
    samples = {}
    for name, predictions in data.items():
        report["models"][name], samples[name] = template.model_section(predictions, context, run.missing_folds(name),
                                                                       n_boot, seed)
        report["models"][name]["profile"] = (run.profile or {}).get(name)
    coverage = run.coverage(list(dict.fromkeys([*template.model_order, *data])))
    report["coverage"], report["notes"] = coverage, coverage.notes() + training_event_notes(run.log)
    if "student" in data:
        for other in [n for n in data if n != "student"]:
            paired = data["student"].paired_with(data[other])
            report["comparisons"][f"student_vs_{other}"] = (
                {"a": "student", "b": other, "available": False,
                 "reason": f"no {template.item} predicted by both models"} if paired is None else
                template.comparison(data["student"], data[other], *paired, context, samples, n_boot, seed))
    for other in template.compared:
        report["comparisons"].setdefault(f"student_vs_{other}", {"a": "student", "b": other, "available": False,
                                                                 "reason": "a model of the pair has no completed fold"})
    template.extra_sections(run, data, context, report, n_boot, seed)
    report = json_safe(report)
    html, pngs = template.render(run, report, data, context)
    if report.get("fidelity") is not None:
        from ..fidelity import fidelity_html

        html = html.replace("</body>", fidelity_html(report["fidelity"]) + "\n</body>")
    write_report(run.path, report, html, {**template.csv_files(report), **pngs})
    return report


class HtmlParts:
    """Paragraphs every vertical's report page has, written once."""

    @staticmethod
    def preamble(doc: HtmlDocument, report: dict[str, Any], settings: list[str], how_to_read: list[str]) -> None:
        """The run's settings (muted paragraphs), how to read the report, and the report's warnings."""
        for line in settings:
            doc.paragraph(line, "muted")
        doc.heading("How to read this report")
        doc.bullets(how_to_read, "note")
        if report["notes"]:
            doc.bullets(report["notes"], "warn")

    @staticmethod
    def training_curves(doc: HtmlDocument, models: dict[str, Any], pngs: dict[str, bytes | None]) -> None:
        from .run_inputs import safe_name

        doc.heading("Training curves")
        drawn = [name for name in models if pngs.get(f"{safe_name(name)}_training.png")]
        if not drawn:
            doc.paragraph("No log.jsonl records: training curves are not available.", "muted")
            return
        doc.paragraph("Training loss and inner-validation metrics per epoch, one line per fold; a star marks the "
                      "evaluation of the SWA-averaged model.", "muted")
        for name in drawn:
            doc.figure(pngs[f"{safe_name(name)}_training.png"], name)

    @staticmethod
    def comparisons(doc: HtmlDocument, report: dict[str, Any], intro: str,
                    show: Callable[[HtmlDocument, dict[str, Any]], None]) -> None:
        """The student's paired comparisons: ``show(doc, comparison)`` for each available one."""
        doc.heading("Paired comparisons")
        doc.paragraph(intro, "muted")
        for key, comparison in report["comparisons"].items():
            if not comparison.get("available"):
                doc.paragraph(f"{key}: not available ({comparison.get('reason')}).", "muted")
                continue
            show(doc, comparison)

    @staticmethod
    def profile(doc: HtmlDocument, models: dict[str, Any]) -> None:
        from .run_inputs import PROFILE_HEADER, profile_rows

        doc.heading("Model size and latency")
        rows = profile_rows({name: model.get("profile") for name, model in models.items()})
        if rows:
            doc.table(PROFILE_HEADER, rows, digits=2)
        else:
            doc.paragraph("No model_profile.json in this run folder.", "muted")

    @staticmethod
    def files(doc: HtmlDocument, tables: str) -> None:
        doc.heading("Files")
        doc.paragraph(f"report.json holds every number shown here; report/ holds {tables} CSV tables and the plots "
                      "as PNG files.", "muted")
