"""The OCT classification report, rebuilt from a run folder's files only (``medkd report RUN``).

For every model found under ``RUN/folds/fold_<k>/<model>/`` (teacher, student, baseline, or any other name):
metrics per fold, mean ± std over folds, and the pooled out-of-fold estimate with a 95% percentile CI from a
bootstrap over PATIENTS (all images of a resampled patient together). The student is compared with every other
model by a paired patient bootstrap of the difference (the same resampled patients for both models) and a
McNemar test on per-image correctness. Outputs: ``RUN/report.json``, ``RUN/report.html`` (one self-contained
file) and ``RUN/report/`` (CSV tables and PNG plots). See :func:`build_report` for the JSON layout.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from kdcore.errors import DataError
from kdcore.losses import self_distillation_losses
from kdcore.report import bootstrap_samples, csv_text, RunInputs, safe_name, summarize_samples
from kdcore.report.template import (LEVEL, PooledPredictions, ReportTemplate, build_run_report,
                                    paired_difference_samples)
from kdcore.stats import fold_summary, mcnemar

from .metrics import (CLASS_METRICS, ECE_BINS, MACRO_METRICS, classification_metrics, flat_metrics, reliability_bins,
                      roc_curves)
from .report_html import render_report

__all__ = ["build_report", "OCTReport", "REPORT_METRICS", "MODEL_ORDER"]

MODEL_ORDER = ("teacher", "student", "baseline")
REPORT_METRICS = MACRO_METRICS  # accuracy, sensitivity, specificity, precision, f1, auc, ece


@dataclass
class ModelPredictions(PooledPredictions):
    """Pooled out-of-fold predictions of one classifier: patients, target indices, class probabilities."""

    patients: np.ndarray
    targets: np.ndarray
    probs: np.ndarray


def _target_index(value: str, classes: list[str], where: str) -> int:
    if value in classes:
        return classes.index(value)
    try:
        index = int(value)
    except ValueError:
        raise DataError(f"{where}: target {value!r} is neither a class name {classes} nor an index") from None
    if not 0 <= index < len(classes):
        raise DataError(f"{where}: target index {index} outside 0..{len(classes) - 1}")
    return index


def load_model_predictions(run: RunInputs, name: str, classes: list[str]) -> ModelPredictions:
    columns = ["id", "patient", "target"] + [f"prob_{c}" for c in classes]
    ids, patients, folds, targets, probs = [], [], [], [], []
    for fold in run.models[name]:
        path = run.model_dir(name, fold) / "predictions.csv"
        rows = run.predictions(name, fold, columns)
        if not rows:
            raise DataError(f"{path}: no predictions, although done.json marks the fold complete")
        for line, row in enumerate(rows, start=2):
            where = f"{path}:{line}"
            ids.append(row["id"])
            patients.append(row["patient"])
            folds.append(fold)
            targets.append(_target_index(row["target"], classes, where))
            try:
                probs.append([float(row[f"prob_{c}"]) for c in classes])
            except ValueError:
                raise DataError(f"{where}: a prob_ column is not a number") from None
    ids_arr = np.asarray(ids, dtype=str)
    unique, counts = np.unique(ids_arr, return_counts=True)
    if (counts > 1).any():
        raise DataError(f"{run.path}: model {name!r} predicts image {unique[counts > 1][0]!r} more than once "
                        "(in two folds, or twice in one predictions.csv)")
    order = np.argsort(ids_arr, kind="stable")
    return ModelPredictions(name=name, folds=list(run.models[name]), ids=ids_arr[order],
                            fold_of=np.asarray(folds)[order], patients=np.asarray(patients, dtype=str)[order],
                            targets=np.asarray(targets, dtype=np.int64)[order],
                            probs=np.asarray(probs, dtype=np.float64).reshape(len(ids), len(classes))[order])


def _metric_fn(data: ModelPredictions, classes: list[str]):
    def compute(indices: np.ndarray) -> dict[str, float | None]:
        return flat_metrics(classification_metrics(data.targets[indices], data.probs[indices], classes))
    return compute


def _model_section(data: ModelPredictions, classes: list[str], missing: list[int], n_boot: int, seed: int
                   ) -> tuple[dict, list[dict]]:
    try:
        pooled = classification_metrics(data.targets, data.probs, classes)
    except ValueError as exc:
        raise DataError(f"model {data.name!r}: {exc}") from None
    keys = list(flat_metrics(pooled))
    _, samples = bootstrap_samples(_metric_fn(data, classes), len(data.ids), data.patients, n_boot, seed)
    intervals, undefined = summarize_samples(samples, keys, LEVEL)
    folds = []
    for fold in data.folds:
        mask = data.fold_of == fold
        m = classification_metrics(data.targets[mask], data.probs[mask], classes)
        folds.append({"fold": fold, "n_images": int(mask.sum()), "n_patients": len(set(data.patients[mask])),
                      **{k: m[k] for k in REPORT_METRICS}, "per_class": m["per_class"],
                      "confusion_matrix": m["confusion_matrix"]})
    summary = {}
    for metric in REPORT_METRICS:
        summary[metric] = {**fold_summary([f[metric] for f in folds]), "ci95": intervals[metric],
                           "pooled": pooled[metric], "n_folds": len(folds)}
    per_class = {}
    for name in classes:
        entry: dict[str, Any] = {"support": pooled["per_class"][name]["support"]}
        for metric in CLASS_METRICS:
            by_fold = [f["per_class"][name][metric] for f in folds]
            entry[metric] = {"pooled": pooled["per_class"][name][metric], "ci95": intervals[f"{name}/{metric}"],
                             **fold_summary(by_fold), "folds": by_fold}
        per_class[name] = entry
    section = {
        "folds_done": list(data.folds), "folds_missing": missing,
        "n_images": len(data.ids), "n_patients": len(set(data.patients.tolist())),
        "folds": folds, "summary": summary, "per_class": per_class,
        "confusion_matrix": pooled["confusion_matrix"],
        "reliability": reliability_bins(data.targets, data.probs),
        "bootstrap": {"n_boot": n_boot, "unit": "patient", "undefined_resamples": undefined},
    }
    return section, samples


def _comparison(a: ModelPredictions, b: ModelPredictions, sub_a: ModelPredictions, sub_b: ModelPredictions,
                classes: list[str], samples: dict[str, list[dict]], n_boot: int, seed: int) -> dict:
    common = sub_a.ids
    if not np.array_equal(sub_a.patients, sub_b.patients) or not np.array_equal(sub_a.targets, sub_b.targets):
        raise DataError(f"{a.name} and {b.name} disagree on the patient or target of some images")
    estimate_a = flat_metrics(classification_metrics(sub_a.targets, sub_a.probs, classes))
    estimate_b = flat_metrics(classification_metrics(sub_b.targets, sub_b.probs, classes))
    diffs = paired_difference_samples(a, b, sub_a, sub_b, samples, lambda d: _metric_fn(d, classes), sub_a.patients,
                                      n_boot, seed)
    intervals, undefined = summarize_samples(diffs, list(REPORT_METRICS), LEVEL)
    metrics = {}
    for metric in REPORT_METRICS:
        va, vb = estimate_a[metric], estimate_b[metric]
        metrics[metric] = {"difference": None if va is None or vb is None else va - vb, "ci95": intervals[metric],
                           a.name: va, b.name: vb}
    correct_a = sub_a.probs.argmax(axis=1) == sub_a.targets
    correct_b = sub_b.probs.argmax(axis=1) == sub_b.targets
    return {"a": a.name, "b": b.name, "available": True, "folds": sorted(set(sub_a.fold_of.tolist())),
            "n_images": int(common.size), "n_patients": len(set(sub_a.patients.tolist())),
            "metrics": metrics, "mcnemar": mcnemar(correct_a, correct_b),
            "bootstrap": {"n_boot": n_boot, "unit": "patient", "paired": True, "undefined_resamples": undefined}}


def _classes(run: RunInputs) -> list[str]:
    found: dict[str, list[str]] = {}
    for name in run.models:
        meta = run.model_json(name)
        if not isinstance(meta.get("classes"), list) or not meta["classes"]:
            raise DataError(f"{run.path}: model.json of {name!r} has no 'classes' list")
        found[name] = [str(c) for c in meta["classes"]]
    distinct = {tuple(v) for v in found.values()}
    if len(distinct) > 1:
        raise DataError(f"{run.path}: models disagree on the classes: {found}")
    return list(next(iter(distinct)))


def _student_objective(config: dict) -> dict | None:
    """The student's resolved objective as config.yaml records it (temperature, weights, warm-up, loss, and the
    feature term when one is set)."""
    student = config.get("student") or {}
    keys = ("kd_loss", "temperature", "ce_weight", "kd_weight", "kd_warmup_epochs", "kd_loss_params")
    if student.get("feature_loss"):
        keys += ("feature_loss", "feature_weight", "feature_path")
    return {k: student.get(k) for k in keys} if "kd_loss" in student else None


DISTILLATION_NOTES = {
    "self-distilled": "The student is self-distilled (student.kd_loss uskd): no teacher taught it; the comparison "
                      "that measures what distillation gave is student_vs_baseline (the same network, labels only).",
    "online": "Online distillation (student.kd_loss dml or bdkd): the teacher was trained together with the student "
              "on the same batches, not before it; the epoch kept for both is the one the student's validation "
              "metric chose.",
}


def distillation_mode(config: dict) -> str:
    """``offline`` (a frozen, trained teacher), ``online`` or ``self-distilled``, from a run's config.yaml."""
    student = config.get("student") or {}
    if config.get("distillation") == "online":
        return "online"
    if student.get("kd_loss") in self_distillation_losses() and not student.get("feature_loss"):
        return "self-distilled"
    return "offline"


class OCTReport(ReportTemplate):
    model_order, unit, item, compared, class_counts = MODEL_ORDER, "patient", "image", ("teacher", "baseline"), True

    def context(self, run: RunInputs) -> dict[str, Any]:
        return {"classes": _classes(run)}

    def settings(self, run: RunInputs, context: dict[str, Any]) -> dict[str, Any]:
        return {"ece_bins": ECE_BINS, "prediction": "argmax of the class probabilities",
                "student_objective": _student_objective(run.config), "distillation": distillation_mode(run.config)}

    def load(self, run: RunInputs, name: str, context: dict[str, Any]) -> ModelPredictions:
        return load_model_predictions(run, name, context["classes"])

    def model_section(self, data: ModelPredictions, context: dict[str, Any], missing: list[int], n_boot: int,
                      seed: int) -> tuple[dict, list[dict]]:
        return _model_section(data, context["classes"], missing, n_boot, seed)

    def comparison(self, a: ModelPredictions, b: ModelPredictions, sub_a: ModelPredictions, sub_b: ModelPredictions,
                   context: dict[str, Any], samples: dict[str, list[dict]], n_boot: int, seed: int) -> dict:
        return _comparison(a, b, sub_a, sub_b, context["classes"], samples, n_boot, seed)

    def extra_sections(self, run: RunInputs, data: dict[str, ModelPredictions], context: dict[str, Any],
                       report: dict[str, Any], n_boot: int, seed: int) -> None:
        from .fidelity_report import fidelity_section

        report["fidelity"] = fidelity_section(data, context["classes"], report, run.config, n_boot, seed)
        mode = distillation_mode(run.config)
        if mode in DISTILLATION_NOTES:
            report["notes"].append(DISTILLATION_NOTES[mode])
            if "student" in report["models"]:
                report["models"]["student"]["label"] = f"student ({mode})"

    def render(self, run: RunInputs, report: dict[str, Any], data: dict[str, ModelPredictions],
               context: dict[str, Any]) -> tuple[str, dict[str, bytes]]:
        from .report_saliency import saliency_gallery

        curves = {name: roc_curves(d.targets, d.probs, context["classes"]) for name, d in data.items()}
        return render_report(report, curves, run.log, saliency=saliency_gallery(run.path))

    def csv_files(self, report: dict[str, Any]) -> dict[str, str]:
        return _csv_files(report)


def build_report(run_dir: str | os.PathLike, n_boot: int | None = None, seed: int = 0) -> dict:
    """Compute the report of a run folder and write ``report.json``, ``report.html`` and ``report/``.

    Args:
        run_dir: the run folder.
        n_boot: patient bootstrap resamples; None takes ``report.bootstrap`` of ``config.yaml`` (default 1000);
            0 gives no intervals (``ci95`` null).
        seed: bootstrap seed (the same for every model, so comparisons are paired resample by resample).

    Returns:
        The report dict (as written to ``report.json``)::

            run        {recipe, folder}
            settings   {n_boot, seed, level, unit: "patient", ece_bins, prediction,
                        student_objective: {kd_loss, temperature, ce_weight, kd_weight, kd_warmup_epochs,
                                            kd_loss_params}}
            classes    [names in index order]
            protocol   {n_folds, group_name, patients, images, manifest_sha, seed, val_fraction,
                        folds: [{fold, train, val, test, val_share, test_images, class_counts}], audit, incomplete}
                       (val_fraction: the inner-validation share asked; val_share: the share each fold obtained)
            models.<name>  {folds_done, folds_missing, n_images, n_patients,
                            folds: [{fold, n_images, n_patients, <metric>..., per_class, confusion_matrix}],
                            summary.<metric>: {mean, std, ci95: [lo, hi], pooled, n_folds},
                            per_class.<CLASS>: {support, <metric>: {pooled, ci95, mean, std, folds: [...]}},
                            confusion_matrix, reliability: [{lower, upper, count, confidence, accuracy}],
                            bootstrap: {n_boot, unit, undefined_resamples}, profile}
            comparisons.student_vs_<other>  {a, b, available, folds, n_images, n_patients,
                            metrics.<metric>: {difference, ci95, <a>, <b>}, mcnemar, bootstrap}
            fidelity   {student, teacher, unit, agreement: {value, ci95}, kl: {value, ci95}, agreement_per_class,
                        teacher_right_student_wrong, student_right_teacher_wrong: {count, share, ci95},
                        pairs.student_vs_teacher, diagnosis: [strings]}  (see kdcore.fidelity)
            notes      [strings]

        ``<metric>`` is accuracy, sensitivity, specificity, precision, f1, auc, ece (macro over classes);
        undefined values are null.
    """
    return build_run_report(OCTReport(), run_dir, n_boot, seed)


def _csv_files(report: dict) -> dict[str, str]:
    files = {}
    metrics = list(REPORT_METRICS)
    summary_rows = []
    for name, model in report["models"].items():
        files[f"{safe_name(name)}_folds.csv"] = csv_text(
            ["fold", "n_images", "n_patients", *metrics],
            [[f["fold"], f["n_images"], f["n_patients"], *[f[m] for m in metrics]] for f in model["folds"]])
        class_rows = []
        for cls, entry in model["per_class"].items():
            row: list[Any] = [cls, entry["support"]]
            for m in CLASS_METRICS:
                ci = entry[m]["ci95"] or [None, None]
                row += [entry[m]["pooled"], *ci]
            class_rows.append(row)
        files[f"{safe_name(name)}_per_class.csv"] = csv_text(
            ["class", "support", *[f"{m}{s}" for m in CLASS_METRICS for s in ("", "_ci_lo", "_ci_hi")]], class_rows)
        for m in metrics:
            s = model["summary"][m]
            summary_rows.append([name, m, s["mean"], s["std"], s["pooled"], *(s["ci95"] or [None, None])])
    files["summary.csv"] = csv_text(["model", "metric", "fold_mean", "fold_std", "pooled", "ci_lo", "ci_hi"], summary_rows)
    comparison_rows = []
    for key, comp in report["comparisons"].items():
        if not comp.get("available"):
            continue
        for m, v in comp["metrics"].items():
            comparison_rows.append([key, m, v["difference"], *(v["ci95"] or [None, None])])
    files["comparisons.csv"] = csv_text(["comparison", "metric", "difference", "ci_lo", "ci_hi"], comparison_rows)
    return files
