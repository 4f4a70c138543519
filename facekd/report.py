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
from kdcore.fidelity import fidelity_html
from kdcore.report import (audit_summary, bootstrap_samples, csv_text, difference_samples, json_safe,
                           paired_bootstrap_samples, read_json, read_run, RunInputs, safe_name, summarize_samples,
                           write_report)
from kdcore.report.rundata import training_event_notes
from kdcore.stats import fold_summary

from .report_html import draw_overlays, render_report

__all__ = ["build_report", "landmark_metrics", "MODEL_ORDER", "METRICS", "THRESHOLD"]

MODEL_ORDER = ("tough", "tolerant", "student", "baseline")
METRICS = ("nme", "fr", "auc")
THRESHOLD = 0.1
LEVEL = 0.95
CED_POINTS = 101


@dataclass
class LandmarkPredictions:
    """Pooled out-of-fold predictions of one model, sorted by id; points (N, K, 2) in image pixels."""

    name: str
    folds: list[int]
    ids: np.ndarray
    subjects: np.ndarray
    fold_of: np.ndarray
    subsets: np.ndarray
    pred: np.ndarray
    gt: np.ndarray
    nmes: np.ndarray

    def subset(self, mask: np.ndarray) -> "LandmarkPredictions":
        return LandmarkPredictions(self.name, sorted(set(self.fold_of[mask].tolist())), self.ids[mask],
                                   self.subjects[mask], self.fold_of[mask], self.subsets[mask], self.pred[mask],
                                   self.gt[mask], self.nmes[mask])


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
    return LandmarkPredictions(name, list(run.models[name]), ids_arr[order], np.asarray(subjects, dtype=str)[order],
                               np.asarray(folds)[order], np.asarray(subsets, dtype=str)[order], points[order, 0],
                               points[order, 1], np.asarray(nmes)[order])


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


def _comparison(a: LandmarkPredictions, b: LandmarkPredictions, samples: dict, n_boot: int, seed: int) -> dict:
    common = np.intersect1d(a.ids, b.ids)
    if common.size == 0:
        return {"a": a.name, "b": b.name, "available": False, "reason": "no face predicted by both models"}
    sub_a, sub_b = a.subset(np.isin(a.ids, common)), b.subset(np.isin(b.ids, common))
    if not np.array_equal(sub_a.subjects, sub_b.subjects) or not np.allclose(sub_a.gt, sub_b.gt):
        raise DataError(f"{a.name} and {b.name} disagree on the subject or ground truth of some faces")
    if len(common) == len(a.ids) == len(b.ids):
        diffs = difference_samples(samples[a.name], samples[b.name])  # same rows and seed: already paired
    else:
        _, diffs = paired_bootstrap_samples(_compute(sub_a), _compute(sub_b), len(common), sub_a.subjects,
                                            n_boot, seed)
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


def _protocol(run: RunInputs) -> dict:
    manifest = run.manifest
    folds = [{"fold": f.fold, "train": len(f.train), "val": len(f.val), "test": len(f.test), "val_share": f.val_share,
              "test_images": int(sum(f.class_counts.get("test", {}).values())) or None} for f in manifest.folds]
    return {"n_folds": manifest.n_folds, "group_name": manifest.group_name, "subjects": manifest.n_groups,
            "images": manifest.n_items, "seed": manifest.seed, "val_fraction": manifest.val_fraction,
            "manifest_sha": manifest.sha, "folds": folds, "audit": audit_summary(run.audit),
            "incomplete": run.incomplete}


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
    run = read_run(run_dir, MODEL_ORDER)
    if not run.models:
        raise DataError(f"{run.path}: no completed model (no folds/fold_<k>/<model>/done.json); nothing to report")
    n_boot = (run.config.get("report") or {}).get("bootstrap", 1000) if n_boot is None else n_boot
    if not isinstance(n_boot, int) or n_boot < 0:
        raise DataError(f"{run.path}: report.bootstrap must be a non-negative integer, got {n_boot!r}")
    n_points = _n_points(run)
    scheme = run.model_json(next(iter(run.models))).get("scheme")
    data = {name: load_landmark_predictions(run, name, n_points) for name in run.models}
    report: dict[str, Any] = {
        "run": {"recipe": run.config.get("name"), "folder": run.path.name},
        "settings": {"n_boot": n_boot, "seed": seed, "level": LEVEL, "unit": "subject", "threshold": THRESHOLD,
                     "normaliser": "inter_ocular (outer eye corners)", "n_points": n_points, "scheme": scheme},
        "protocol": _protocol(run), "models": {}, "comparisons": {}, "notes": [],
    }
    samples = {}
    for name, predictions in data.items():
        missing = run.missing_folds(name)
        report["models"][name], samples[name] = _model_section(predictions, missing, n_boot, seed)
        report["models"][name]["profile"] = (run.profile or {}).get(name)
    report["notes"] += run.coverage_notes(list(dict.fromkeys([*MODEL_ORDER, *data])))
    report["notes"] += training_event_notes(run.log)
    if "student" in data:
        for other in [n for n in data if n != "student"]:
            report["comparisons"][f"student_vs_{other}"] = _comparison(data["student"], data[other], samples,
                                                                      n_boot, seed)
    for other in ("tough", "tolerant", "baseline"):
        report["comparisons"].setdefault(f"student_vs_{other}", {"a": "student", "b": other, "available": False,
                                                                 "reason": "a model of the pair has no completed fold"})
    paths, relative, reason = _image_paths(run)
    examples = _overlay_examples(data) if not reason else []
    for example in examples:
        example["path"] = relative.get(example["id"])
    overlay_png, problems = draw_overlays(examples, data, paths) if examples else (None, [])
    report["overlays"] = {"available": overlay_png is not None, "reason": reason, "examples": examples,
                          "problems": problems}
    from .fidelity_report import fidelity_section

    report["fidelity"] = fidelity_section(data, report, THRESHOLD, n_boot, seed)
    report = json_safe(report)
    html, pngs = render_report(report, run.log, overlay_png)
    html = html.replace("</body>", fidelity_html(report["fidelity"]) + "\n</body>")
    write_report(run.path, report, html, {**_csv_files(report), **pngs})
    return report


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
