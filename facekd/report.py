"""The facial landmark report, rebuilt from a run folder's files only (``facekd report RUN``).

For every model under ``RUN/folds/fold_<k>/<model>/`` (tough and tolerant teachers, student, baseline, or any
other name): NME (inter-ocular normalised, a fraction), failure rate and exact CED AUC at 0.1 per fold, mean ±
std over folds, and the pooled out-of-fold estimate with a 95% percentile CI from a bootstrap over SUBJECTS;
per-subset results, CED curves, per-landmark error, paired subject-bootstrap comparisons of the student with
every other model, and overlays of predicted and true points on example images when the data root is
reachable. See :func:`build_report` for the JSON layout.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facekd.metrics import auc, ced_curve, failure_rate, nme, per_landmark_error
from kdcore.errors import DataError
from kdcore.report import bootstrap_samples, csv_text, read_json, RunInputs, safe_name, summarize_samples
from kdcore.report.template import (LEVEL, PooledPredictions, ReportTemplate, build_run_report,
                                    paired_difference_samples)
from kdcore.stats import fold_summary

from .report_html import draw_overlays, render_report

__all__ = ["build_report", "FaceReport", "LandmarkPredictions", "landmark_metrics", "MODEL_ORDER", "METRICS", "THRESHOLD"]

MODEL_ORDER = ("tough", "tolerant", "student", "baseline")
METRICS = ("nme", "fr", "auc")
THRESHOLD = 0.1
CED_POINTS = 101


@dataclass
class LandmarkPredictions(PooledPredictions):
    """Pooled out-of-fold predictions of one landmark model; points (N, K, 2) in image pixels."""

    subjects: np.ndarray
    subsets: np.ndarray
    pred: np.ndarray
    gt: np.ndarray
    nmes: np.ndarray


def landmark_metrics(nmes: np.ndarray, threshold: float = THRESHOLD) -> dict[str, float]:
    """``{"nme": mean NME, "fr": failure rate at threshold, "auc": exact CED AUC at threshold}``."""
    return {"nme": float(np.mean(nmes)), "fr": failure_rate(nmes, threshold), "auc": auc(nmes, threshold)}


def _n_points(run: RunInputs) -> int:
    found = {}
    for name in run.models:
        meta = run.model_json(name)
        if not isinstance(meta.get("n_points"), int) or meta["n_points"] < 2:
            raise DataError(f"{run.path}: model.json of {name!r} has no valid 'n_points'")
        found[name] = meta["n_points"]
    if len(set(found.values())) > 1:
        raise DataError(f"{run.path}: models disagree on the number of landmarks: {found}")
    return next(iter(found.values()))


def load_landmark_predictions(run: RunInputs, name: str, n_points: int) -> LandmarkPredictions:
    point_cols = [f"{p}{i}" for i in range(n_points) for p in ("x", "y")]
    truth_cols = [f"g{c}" for c in point_cols]
    ids, subjects, folds, subsets, values = [], [], [], [], []
    for fold in run.models[name]:
        path = run.model_dir(name, fold) / "predictions.csv"
        rows = run.predictions(name, fold, ["id", "subject", *point_cols, *truth_cols])
        if not rows:
            raise DataError(f"{path}: no predictions, although done.json marks the fold complete")
        for line, row in enumerate(rows, start=2):
            try:
                values.append([float(row[c]) for c in point_cols + truth_cols])
            except ValueError:
                raise DataError(f"{path}:{line}: a landmark coordinate is not a number") from None
            ids.append(row["id"])
            subjects.append(row["subject"])
            subsets.append(row.get("subset") or "")
            folds.append(fold)
    ids_arr = np.asarray(ids, dtype=str)
    unique, counts = np.unique(ids_arr, return_counts=True)
    if (counts > 1).any():
        raise DataError(f"{run.path}: model {name!r} predicts face {unique[counts > 1][0]!r} more than once")
    points = np.asarray(values, dtype=np.float64).reshape(len(ids), 2, n_points, 2)
    if not np.isfinite(points).all():
        raise DataError(f"{run.path}: model {name!r} has non-finite landmark coordinates")
    try:
        nmes = nme(points[:, 0], points[:, 1])
    except ValueError as exc:
        raise DataError(f"{run.path}: model {name!r}: {exc}") from None
    order = np.argsort(ids_arr, kind="stable")
    return LandmarkPredictions(name=name, folds=list(run.models[name]), ids=ids_arr[order],
                               fold_of=np.asarray(folds)[order], subjects=np.asarray(subjects, dtype=str)[order],
                               subsets=np.asarray(subsets, dtype=str)[order], pred=points[order, 0],
                               gt=points[order, 1], nmes=np.asarray(nmes)[order])


def _compute(data: LandmarkPredictions):
    return lambda idx: landmark_metrics(data.nmes[idx])


def _subsets(data: LandmarkPredictions, n_boot: int, seed: int) -> dict[str, dict]:
    # A face may belong to several subsets (WFLW's attribute subsets): the column holds ';'-separated tags.
    tags = [set(value.split(";")) - {""} for value in data.subsets.tolist()]
    names = sorted(set().union(*tags)) if tags else []
    out = {}
    for subset in names:
        part = data.subset(np.array([subset in t for t in tags]))
        estimate, samples = bootstrap_samples(_compute(part), len(part.ids), part.subjects, n_boot, seed)
        intervals, _ = summarize_samples(samples, METRICS, LEVEL)
        out[subset] = {"n_images": len(part.ids), "n_subjects": len(set(part.subjects.tolist())),
                       **{m: {"pooled": estimate[m], "ci95": intervals[m]} for m in METRICS}}
    return out


def _model_section(data: LandmarkPredictions, missing: list[int], n_boot: int, seed: int) -> tuple[dict, list]:
    estimate, samples = bootstrap_samples(_compute(data), len(data.ids), data.subjects, n_boot, seed)
    intervals, undefined = summarize_samples(samples, METRICS, LEVEL)
    folds = []
    for fold in data.folds:
        mask = data.fold_of == fold
        folds.append({"fold": fold, "n_images": int(mask.sum()), "n_subjects": len(set(data.subjects[mask].tolist())),
                      **landmark_metrics(data.nmes[mask])})
    summary = {m: {**fold_summary([f[m] for f in folds]), "ci95": intervals[m], "pooled": estimate[m],
                   "n_folds": len(folds)} for m in METRICS}
    x, y = ced_curve(data.nmes, THRESHOLD, CED_POINTS)
    section = {
        "folds_done": list(data.folds), "folds_missing": missing, "n_images": len(data.ids),
        "n_subjects": len(set(data.subjects.tolist())), "folds": folds, "summary": summary,
        "subsets": _subsets(data, n_boot, seed),
        "per_landmark_error": per_landmark_error(data.pred, data.gt).tolist(),
        "ced": {"x": x.tolist(), "y": y.tolist()},
        "bootstrap": {"n_boot": n_boot, "unit": "subject", "undefined_resamples": undefined},
    }
    return section, samples


def _comparison(a: LandmarkPredictions, b: LandmarkPredictions, sub_a: LandmarkPredictions,
                sub_b: LandmarkPredictions, samples: dict, n_boot: int, seed: int) -> dict:
    common = sub_a.ids
    if not np.array_equal(sub_a.subjects, sub_b.subjects) or not np.allclose(sub_a.gt, sub_b.gt):
        raise DataError(f"{a.name} and {b.name} disagree on the subject or ground truth of some faces")
    diffs = paired_difference_samples(a, b, sub_a, sub_b, samples, _compute, sub_a.subjects, n_boot, seed)
    intervals, undefined = summarize_samples(diffs, METRICS, LEVEL)
    est_a, est_b = landmark_metrics(sub_a.nmes), landmark_metrics(sub_b.nmes)
    metrics = {m: {"difference": est_a[m] - est_b[m], "ci95": intervals[m], a.name: est_a[m], b.name: est_b[m]}
               for m in METRICS}
    return {"a": a.name, "b": b.name, "available": True, "folds": sorted(set(sub_a.fold_of.tolist())),
            "n_images": int(common.size), "n_subjects": len(set(sub_a.subjects.tolist())), "metrics": metrics,
            "student_better_share": float(np.mean(sub_a.nmes < sub_b.nmes)),
            "bootstrap": {"n_boot": n_boot, "unit": "subject", "paired": True, "undefined_resamples": undefined}}


def _image_paths(run: RunInputs) -> tuple[dict[str, Path], dict[str, str], str | None]:
    """``(id -> image file, id -> path relative to the data root, reason)``; the reason says why overlays
    cannot be drawn (no dataset.json, no data.root, images not reachable), else None."""
    dataset = read_json(run.path / "dataset.json", required=False)
    if dataset is None:
        return {}, {}, "the run folder has no dataset.json"
    items = dataset if isinstance(dataset, list) else dataset.get("items") or dataset.get("records") or []
    root = (run.config.get("data") or {}).get("root") or (dataset.get("root") if isinstance(dataset, dict) else None)
    if not root and (run.path / "data").is_dir():
        root = run.path / "data"  # synthetic faces generated inside the run folder
    if not root:
        return {}, {}, "config.yaml has no data.root and the run folder has no data/ folder"
    root_path = Path(root)
    if not root_path.is_absolute() and not root_path.exists():
        root_path = run.path / root_path
    relative = {str(item["id"]): str(item["path"]) for item in items
                if isinstance(item, dict) and "id" in item and "path" in item}
    if not relative:
        return {}, {}, "dataset.json lists no items with id and path"
    paths = {key: root_path / value for key, value in relative.items()}
    if not any(p.is_file() for p in list(paths.values())[:20]):
        return {}, relative, f"the images are not reachable under {root} (data root moved or not mounted here)"
    return paths, relative, None


def _overlay_examples(data: dict[str, LandmarkPredictions]) -> list[dict]:
    """Best, median and worst face of the student (or the first model) by NME."""
    lead = data.get("student") or next(iter(data.values()))
    order = np.argsort(lead.nmes, kind="stable")
    picks = dict.fromkeys([order[0], order[len(order) // 2], order[-1]])
    return [{"id": str(lead.ids[i]), "model": lead.name, "nme": float(lead.nmes[i]), "rank": label}
            for i, label in zip(picks, ("best", "median", "worst"))]


class FaceReport(ReportTemplate):
    model_order, unit, item, compared = MODEL_ORDER, "subject", "face", ("tough", "tolerant", "baseline")

    def context(self, run: RunInputs) -> dict[str, Any]:
        return {"n_points": _n_points(run)}

    def settings(self, run: RunInputs, context: dict[str, Any]) -> dict[str, Any]:
        scheme = run.model_json(next(iter(run.models))).get("scheme")
        return {"threshold": THRESHOLD, "normaliser": "inter_ocular (outer eye corners)",
                "n_points": context["n_points"], "scheme": scheme}

    def load(self, run: RunInputs, name: str, context: dict[str, Any]) -> LandmarkPredictions:
        return load_landmark_predictions(run, name, context["n_points"])

    def model_section(self, data: LandmarkPredictions, context: dict[str, Any], missing: list[int], n_boot: int,
                      seed: int) -> tuple[dict, list]:
        return _model_section(data, missing, n_boot, seed)

    def comparison(self, a: LandmarkPredictions, b: LandmarkPredictions, sub_a: LandmarkPredictions,
                   sub_b: LandmarkPredictions, context: dict[str, Any], samples: dict, n_boot: int, seed: int) -> dict:
        return _comparison(a, b, sub_a, sub_b, samples, n_boot, seed)

    def extra_sections(self, run: RunInputs, data: dict[str, LandmarkPredictions], context: dict[str, Any],
                       report: dict[str, Any], n_boot: int, seed: int) -> None:
        from .fidelity_report import fidelity_section

        paths, relative, reason = _image_paths(run)
        examples = _overlay_examples(data) if not reason else []
        for example in examples:
            example["path"] = relative.get(example["id"])
        self._overlay_png, problems = draw_overlays(examples, data, paths) if examples else (None, [])
        report["overlays"] = {"available": self._overlay_png is not None, "reason": reason, "examples": examples,
                              "problems": problems}
        report["fidelity"] = fidelity_section(data, report, THRESHOLD, n_boot, seed)

    def render(self, run: RunInputs, report: dict[str, Any], data: dict[str, LandmarkPredictions],
               context: dict[str, Any]) -> tuple[str, dict[str, bytes]]:
        return render_report(report, run.log, self._overlay_png)

    def csv_files(self, report: dict[str, Any]) -> dict[str, str]:
        return _csv_files(report)


def build_report(run_dir: str | os.PathLike, n_boot: int | None = None, seed: int = 0) -> dict:
    """Compute the landmark report of a run folder; write ``report.json``, ``report.html`` and ``report/``.

    Args:
        run_dir: the run folder.
        n_boot: subject bootstrap resamples; None takes ``report.bootstrap`` of ``config.yaml`` (default 1000).
        seed: bootstrap seed (shared by all models, so comparisons pair resample by resample).

    Returns:
        The report dict (as written to ``report.json``)::

            run, settings {n_boot, seed, level, unit: "subject", threshold, normaliser, n_points, scheme}
            protocol   {n_folds, group_name, subjects, images, manifest_sha, seed, val_fraction,
                        folds: [{fold, train, val, test, test_images}], audit, incomplete}
            models.<name>  {folds_done, folds_missing, n_images, n_subjects,
                            folds: [{fold, n_images, n_subjects, nme, fr, auc}],
                            summary.<metric>: {mean, std, ci95, pooled, n_folds},
                            subsets.<subset>: {n_images, n_subjects, <metric>: {pooled, ci95}},
                            per_landmark_error: [K], ced: {x, y}, bootstrap, profile}
            comparisons.student_vs_<other>  {a, b, available, folds, n_images, n_subjects,
                            metrics.<metric>: {difference, ci95, <a>, <b>}, student_better_share, bootstrap}
            overlays   {available, reason, examples: [{id, model, nme, rank, path}]}
            notes      [strings]

        Metrics: ``nme`` mean inter-ocular NME (fraction), ``fr`` failure rate at 0.1, ``auc`` exact CED AUC at 0.1.
    """
    return build_run_report(FaceReport(), run_dir, n_boot, seed)


def _csv_files(report: dict) -> dict[str, str]:
    files, summary_rows, subset_rows = {}, [], []
    for name, model in report["models"].items():
        files[f"{safe_name(name)}_folds.csv"] = csv_text(
            ["fold", "n_images", "n_subjects", *METRICS],
            [[f["fold"], f["n_images"], f["n_subjects"], *[f[m] for m in METRICS]] for f in model["folds"]])
        files[f"{safe_name(name)}_per_landmark.csv"] = csv_text(
            ["landmark", "mean_nme"], [[i, v] for i, v in enumerate(model["per_landmark_error"])])
        for m in METRICS:
            s = model["summary"][m]
            summary_rows.append([name, m, s["mean"], s["std"], s["pooled"], *(s["ci95"] or [None, None])])
        for subset, entry in model["subsets"].items():
            for m in METRICS:
                subset_rows.append([name, subset, m, entry[m]["pooled"], *(entry[m]["ci95"] or [None, None])])
    files["summary.csv"] = csv_text(["model", "metric", "fold_mean", "fold_std", "pooled", "ci_lo", "ci_hi"], summary_rows)
    files["subsets.csv"] = csv_text(["model", "subset", "metric", "pooled", "ci_lo", "ci_hi"], subset_rows)
    comparison_rows = [[key, m, v["difference"], *(v["ci95"] or [None, None])]
                       for key, comp in report["comparisons"].items() if comp.get("available")
                       for m, v in comp["metrics"].items()]
    files["comparisons.csv"] = csv_text(["comparison", "metric", "difference", "ci_lo", "ci_hi"], comparison_rows)
    return files
