"""The HTML page, plots and image overlays of the landmark report (see :mod:`facekd.report`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from kdcore.errors import DataError
from kdcore.images import read_image
from kdcore.report.template import HtmlParts
from kdcore.report import (HtmlDocument, audit_section, bar_plot, figure_png, fmt, line_plot,
                           new_figure, safe_name, training_curves)

if TYPE_CHECKING:
    from .report import LandmarkPredictions

__all__ = ["render_report", "draw_overlays"]

LABELS = {"nme": "NME (%)", "fr": "FR@0.1 (%)", "auc": "AUC@0.1"}
SCALE = {"nme": 100.0, "fr": 100.0, "auc": 1.0}  # NME and FR shown in percent, stored as fractions
OVERLAY_STYLE = {"truth": ("o", "#00e000"), "student": ("x", "#ff2020"), "baseline": ("+", "#20c0ff")}

HOW_TO_READ = [
    "NME: the mean distance between predicted and true landmarks divided by the inter-ocular distance (outer "
    "eye corners), shown in percent: 5 % means points are off by 5 % of the eye distance on average. Lower is better.",
    "FR@0.1: the share of faces whose NME exceeds 10 % (failures). AUC@0.1: area under the cumulative error "
    "curve up to NME 10 %, divided by 0.1 (1.0 = every point exact). Higher is better.",
    "Every number comes from test subjects the model never saw (cross-validation by subject). 'Mean ± std' "
    "varies over folds; 'pooled' joins all test predictions.",
    "95% intervals resample whole subjects (all faces of a person together), because faces of one person are "
    "alike; they show the uncertainty from the limited number of people.",
    "Comparisons give student minus other model on the same faces with a paired subject bootstrap; for NME and "
    "FR a negative difference favours the student, for AUC a positive one.",
]


def _ci_text(metric: str, value: Any, ci: Sequence[float] | None) -> str:
    scale, digits = SCALE[metric], 2 if SCALE[metric] > 1 else 3
    if value is None:
        return "n/a"
    text = fmt(value * scale, digits)
    if ci and None not in ci:
        text += f" [{fmt(ci[0] * scale, digits)}, {fmt(ci[1] * scale, digits)}]"
    return text


def _mean_std(metric: str, entry: dict) -> str:
    scale, digits = SCALE[metric], 2 if SCALE[metric] > 1 else 3
    if entry["mean"] is None:
        return "n/a"
    text = fmt(entry["mean"] * scale, digits)
    return text if entry["std"] is None else f"{text} ± {fmt(entry['std'] * scale, digits)}"


def draw_overlays(examples: Sequence[dict], data: dict[str, "LandmarkPredictions"], paths: dict[str, Path]
                  ) -> tuple[bytes | None, list[str]]:
    """One panel per example: true points and the student's (and baseline's) predictions on the image crop."""
    panels, problems = [], []
    for example in examples:
        path = paths.get(example["id"])
        if path is None:
            problems.append(f"{example['id']}: not listed in dataset.json")
            continue
        try:
            image = read_image(path, "rgb")
        except DataError as exc:
            problems.append(f"{example['id']}: {exc}")
            continue
        panels.append((example, image))
    if not panels:
        return None, problems
    fig, axes = new_figure(3.4 * len(panels), 3.6, 1, len(panels))
    for ax, (example, image) in zip(np.atleast_1d(axes), panels):
        lead = data[example["model"]]
        row = int(np.flatnonzero(lead.ids == example["id"])[0])
        truth = lead.gt[row]
        size = truth.max(axis=0) - truth.min(axis=0)
        lo = np.maximum(np.floor(truth.min(axis=0) - 0.3 * size), 0).astype(int)
        hi = np.minimum(np.ceil(truth.max(axis=0) + 0.3 * size), [image.shape[1], image.shape[0]]).astype(int)
        ax.imshow(image[lo[1]:hi[1], lo[0]:hi[0]], extent=(lo[0] - 0.5, hi[0] - 0.5, hi[1] - 0.5, lo[1] - 0.5))
        marker, colour = OVERLAY_STYLE["truth"]
        ax.scatter(truth[:, 0], truth[:, 1], s=9, marker=marker, facecolors="none", edgecolors=colour,
                   linewidths=0.8, label="truth")
        for name in ("student", "baseline"):
            if name in data and example["id"] in set(data[name].ids.tolist()):
                points = data[name].pred[int(np.flatnonzero(data[name].ids == example["id"])[0])]
                marker, colour = OVERLAY_STYLE[name]
                ax.scatter(points[:, 0], points[:, 1], s=10, marker=marker, c=colour, linewidths=0.8, label=name)
        ax.set_title(f"{example['rank']}: {example['id']}\n{example['model']} NME {example['nme'] * 100:.2f}%",
                     fontsize=8)
        ax.set_axis_off()
    np.atleast_1d(axes)[0].legend(fontsize=7, loc="lower left")
    return figure_png(fig), problems


def _plots(report: dict, log: Sequence[dict]) -> dict[str, bytes | None]:
    models = report["models"]
    pngs: dict[str, bytes | None] = {}
    pngs["ced.png"] = line_plot({n: (np.asarray(m["ced"]["x"]) * 100, m["ced"]["y"]) for n, m in models.items()},
                                "NME (%)", "share of faces with NME ≤ x", "Cumulative error distribution",
                                step=True, xlim=(0, report["settings"]["threshold"] * 100), ylim=(0, 1.02))
    pngs["per_landmark.png"] = line_plot(
        {n: (np.arange(len(m["per_landmark_error"])), np.asarray(m["per_landmark_error"]) * 100)
         for n, m in models.items()}, "landmark index", "mean NME (%)", "Error per landmark", size=(7.0, 3.2))
    subsets = sorted({s for m in models.values() for s in m["subsets"]})
    if subsets:
        def nme_pct(model: dict, subset: str) -> tuple[float | None, list[float] | None]:
            entry = model["subsets"].get(subset, {}).get("nme")
            if not entry:
                return None, None
            return entry["pooled"] * 100, [v * 100 for v in entry["ci95"]] if entry["ci95"] else None

        values = {n: [nme_pct(m, s) for s in subsets] for n, m in models.items()}
        pngs["subsets.png"] = bar_plot(subsets, {n: [v[0] for v in vs] for n, vs in values.items()},
                                       {n: [v[1] for v in vs] for n, vs in values.items()},
                                       ylabel="NME (%) [95% CI]", title="NME per subset")
    for name in models:
        pngs[f"{safe_name(name)}_training.png"] = training_curves([r for r in log if r.get("model") == name],
                                                                  title=f"{name}: training")
    return pngs


def _protocol(doc: HtmlDocument, report: dict) -> None:
    protocol, group = report["protocol"], report["protocol"]["group_name"]
    doc.heading("Protocol")
    doc.paragraph(f"{protocol['n_folds']}-fold cross-validation by {group}: {fmt(protocol['subjects'])} {group}s, "
                  f"{fmt(protocol['images'])} faces; inner validation {group}s come from each fold's training part. "
                  f"Validation share asked {protocol['val_fraction']}. "
                  f"Fold manifest {protocol['manifest_sha']} (seed {protocol['seed']}). "
                  f"{report['settings']['n_points']} landmarks "
                  f"({report['settings']['scheme'] or 'scheme not recorded'}).")
    doc.table(["fold", f"train {group}s", f"val {group}s", "val share obtained", f"test {group}s", "test faces"],
              [[f["fold"], f["train"], f["val"], fmt(f.get("val_share")), f["test"], f["test_images"]]
               for f in protocol["folds"]])
    audit_section(doc, protocol)


def _results(doc: HtmlDocument, report: dict, pngs: dict) -> None:
    models = report["models"]
    doc.heading("Results per model")
    doc.table(["model"] + [LABELS[m] for m in LABELS],
              [[n] + [_ci_text(k, m["summary"][k]["pooled"], m["summary"][k]["ci95"]) for k in LABELS]
               for n, m in models.items()], caption="Pooled out-of-fold estimate [95% subject-bootstrap CI]")
    doc.table(["model"] + [LABELS[m] for m in LABELS],
              [[n] + [_mean_std(k, m["summary"][k]) for k in LABELS] for n, m in models.items()],
              caption="Mean ± standard deviation over folds")
    for name, m in models.items():
        caption = f"{name}: per fold"
        if m["folds_missing"]:
            caption += f" (fold(s) {m['folds_missing']} missing: not completed)"
        doc.table(["fold", "faces", "subjects"] + [LABELS[k] for k in LABELS],
                  [[f["fold"], f["n_images"], f["n_subjects"]] + [_ci_text(k, f[k], None) for k in LABELS]
                   for f in m["folds"]], caption=caption)
    rows = [[n, s, e["n_images"]] + [_ci_text(k, e[k]["pooled"], e[k]["ci95"]) for k in LABELS]
            for n, m in models.items() for s, e in m["subsets"].items()]
    if rows:
        doc.heading("Per subset")
        doc.table(["model", "subset", "faces"] + [LABELS[k] for k in LABELS], rows)
        doc.figure(pngs.get("subsets.png"), "NME per subset")


def _comparison(doc: HtmlDocument, comp: dict) -> None:
    a, b = comp["a"], comp["b"]
    rows = [[LABELS[m], _ci_text(m, v[a], None), _ci_text(m, v[b], None), _ci_text(m, v["difference"], v["ci95"])]
            for m, v in comp["metrics"].items()]
    doc.table(["metric", a, b, "difference [95% CI]"], rows,
              caption=f"{a} vs {b}: {comp['n_images']} faces, {comp['n_subjects']} subjects; "
                      f"{a} has the lower NME on {comp['student_better_share'] * 100:.1f}% of faces")


def render_report(report: dict, log: Sequence[dict], overlay_png: bytes | None) -> tuple[str, dict[str, bytes]]:
    """``(html, {file name: png bytes})`` for the report dict, log.jsonl records and the overlay figure."""
    pngs = _plots(report, log)
    pngs["overlays.png"] = overlay_png
    settings = report["settings"]
    doc = HtmlDocument(f"Facial landmark report: {report['run'].get('recipe') or report['run']['folder']}")
    HtmlParts.preamble(doc, report, [f"Run folder {report['run']['folder']}; {settings['n_boot']} subject bootstrap "
                                     f"resamples (seed {settings['seed']}); NME normalised by "
                                     f"{settings['normaliser']}; failure threshold {settings['threshold']}."],
                       HOW_TO_READ)
    _protocol(doc, report)
    _results(doc, report, pngs)
    HtmlParts.comparisons(doc, report, "Difference = student minus the other model on the faces both predicted, 95% "
                          "interval from a paired bootstrap over subjects.", _comparison)
    doc.heading("Cumulative error and per-landmark error")
    doc.figure(pngs["ced.png"], "CED: share of faces with NME up to x (pooled over folds)")
    doc.figure(pngs["per_landmark.png"], "Mean NME of each landmark (pooled)")
    doc.heading("Examples")
    overlays = report["overlays"]
    if overlay_png is not None:
        doc.paragraph("Green circles: ground truth; red crosses: student; blue plus signs: baseline. Best, median and "
                      "worst face by NME.", "muted")
        doc.figure(overlay_png, "Predictions on example faces")
    else:
        doc.paragraph(f"No overlays: {overlays.get('reason') or 'the example images could not be read'}.", "muted")
    for problem in overlays.get("problems", []):
        doc.paragraph(problem, "muted")
    HtmlParts.training_curves(doc, report["models"], pngs)
    HtmlParts.profile(doc, report["models"])
    HtmlParts.files(doc, "per-fold, per-subset and per-landmark")
    return doc.render(), {k: v for k, v in pngs.items() if v is not None}
