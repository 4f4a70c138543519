"""The HTML page and PNG plots of the OCT report, drawn from the report dict (see :mod:`medkd.report`)."""

from __future__ import annotations

from typing import Sequence

from kdcore.report.template import HtmlParts
from kdcore.report import (HtmlDocument, audit_section, bar_plot, figure_png, fmt, fmt_ci,
                           fmt_mean_std, heatmap, line_plot, new_figure, safe_name, training_curves)

from .metrics import CLASS_METRICS

__all__ = ["render_report"]

LABELS = {"accuracy": "Accuracy", "sensitivity": "Sensitivity", "specificity": "Specificity",
          "precision": "Precision", "f1": "F1", "auc": "AUC", "ece": "ECE (lower is better)"}

HOW_TO_READ = [
    "Sensitivity (recall) of a class: of the scans that truly show it, the share the model labelled as it. "
    "Missed cases lower it.",
    "Specificity of a class: of the scans that do not show it, the share the model did not label as it. "
    "False alarms lower it.",
    "AUC: the chance that a scan with the condition scores higher for it than a scan without; 0.5 is guessing, "
    "1.0 perfect. ECE: the average gap between the model's stated confidence and how often it is right.",
    "Every number comes from test patients the model never saw during training (cross-validation by patient). "
    "'Mean ± std' varies over the folds (different patient splits); 'pooled' joins all test predictions.",
    "The 95% intervals resample whole patients, because scans of one patient resemble each other; they show the "
    "uncertainty that comes from the limited number of patients, not from the number of images.",
    "Comparisons give student minus other model on the same patients; an interval that excludes 0 means the "
    "difference is unlikely to come from which patients happened to be sampled. McNemar p-values treat images "
    "as independent and are therefore optimistic.",
    "This is a research evaluation, not a medical device. It is not validated for diagnosis and must not be "
    "used to make clinical decisions.",
]


def _reliability_png(bins: Sequence[dict], title: str) -> bytes:
    fig, ax = new_figure(4.0, 3.6)
    width = bins[0]["upper"] - bins[0]["lower"] if bins else 1.0
    used = [b for b in bins if b["count"]]
    ax.bar([b["lower"] + width / 2 for b in used], [b["accuracy"] for b in used], width=width * 0.9,
           color="#4c72b0", label="accuracy")
    ax.plot([b["confidence"] for b in used], [b["accuracy"] for b in used], "o", color="#dd8452", markersize=3,
            label="mean confidence")
    ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=0.8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top class)")
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    return figure_png(fig)


def _plots(report: dict, curves: dict[str, dict], log: Sequence[dict]) -> dict[str, bytes | None]:
    classes = report["classes"]
    pngs: dict[str, bytes | None] = {}
    models = report["models"]
    metrics = ["accuracy", "sensitivity", "specificity", "f1", "auc"]
    pngs["metrics.png"] = bar_plot(
        [LABELS[m] for m in metrics], {n: [m["summary"][k]["pooled"] for k in metrics] for n, m in models.items()},
        {n: [m["summary"][k]["ci95"] for k in metrics] for n, m in models.items()}, ylabel="pooled (95% CI)",
        title="Pooled out-of-fold metrics (macro)", ylim=(0, 1.05))
    for name, model in models.items():
        safe = safe_name(name)
        pngs[f"{safe}_confusion.png"] = heatmap(model["confusion_matrix"], classes, classes, title=f"{name}",
                                                xlabel="predicted", ylabel="true", normalize_rows=True)
        series = {}
        for cls, curve in (curves.get(name) or {}).items():
            if curve is not None:
                series[f"{cls} (AUC {fmt(model['per_class'][cls]['auc']['pooled'])})"] = (curve["fpr"], curve["tpr"])
        if series:
            pngs[f"{safe}_roc.png"] = line_plot(series, "1 - specificity", "sensitivity", f"{name}: ROC per class",
                                                diagonal=True, xlim=(0, 1), ylim=(0, 1.02), size=(4.2, 3.8))
        pngs[f"{safe}_reliability.png"] = _reliability_png(
            model["reliability"], f"{name}: ECE {fmt(model['summary']['ece']['pooled'])}")
        pngs[f"{safe}_training.png"] = training_curves([r for r in log if r.get("model") == name],
                                                       title=f"{name}: training")
    return pngs


def _protocol(doc: HtmlDocument, report: dict) -> None:
    protocol = report["protocol"]
    doc.heading("Protocol")
    doc.paragraph(f"{protocol['n_folds']}-fold cross-validation by {protocol['group_name']}: "
                  f"{fmt(protocol['patients'])} {protocol['group_name']}s, {fmt(protocol['images'])} images. "
                  f"Inner validation {protocol['group_name']}s (for early stopping) come from each fold's training "
                  f"part; test {protocol['group_name']}s are never used for training or model selection. "
                  f"Validation share asked {protocol['val_fraction']}. "
                  f"Fold manifest {protocol['manifest_sha']} (seed {protocol['seed']}).")
    rows = [[f["fold"], f["train"], f["val"], fmt(f.get("val_share")), f["test"], f["test_images"]]
            for f in protocol["folds"]]
    doc.table(["fold", "train patients", "val patients", "val share obtained", "test patients", "test images"], rows)
    audit_section(doc, protocol)


def _results(doc: HtmlDocument, report: dict, pngs: dict) -> None:
    metrics = list(LABELS)
    models = report["models"]
    doc.heading("Results per model")
    rows = [[name] + [fmt_ci(m["summary"][k]["pooled"], m["summary"][k]["ci95"]) for k in metrics]
            for name, m in models.items()]
    doc.table(["model"] + [LABELS[k] for k in metrics], rows,
              caption="Pooled out-of-fold estimate [95% patient-bootstrap CI] (macro over classes)")
    rows = [[name] + [fmt_mean_std(m["summary"][k]["mean"], m["summary"][k]["std"]) for k in metrics]
            for name, m in models.items()]
    doc.table(["model"] + [LABELS[k] for k in metrics], rows, caption="Mean ± standard deviation over folds")
    doc.figure(pngs.get("metrics.png"), "Pooled metrics with 95% patient-bootstrap intervals")
    for name, m in models.items():
        rows = [[f["fold"], f["n_images"], f["n_patients"]] + [f[k] for k in metrics] for f in m["folds"]]
        caption = f"{name}: per fold"
        if m["folds_missing"]:
            caption += f" (fold(s) {m['folds_missing']} missing: not completed)"
        doc.table(["fold", "images", "patients"] + [LABELS[k] for k in metrics], rows, caption=caption)
    doc.heading("Per class")
    for name, m in models.items():
        rows = [[cls, e["support"]] + [fmt_ci(e[k]["pooled"], e[k]["ci95"]) for k in CLASS_METRICS]
                for cls, e in m["per_class"].items()]
        doc.table(["class", "images"] + [LABELS[k] for k in CLASS_METRICS], rows,
                  caption=f"{name}: one-vs-rest, pooled [95% CI]")


def _comparison(doc: HtmlDocument, comp: dict) -> None:
    a, b = comp["a"], comp["b"]
    rows = [[LABELS[m], v[a], v[b], fmt_ci(v["difference"], v["ci95"])] for m, v in comp["metrics"].items()]
    caption = f"{a} vs {b}: {comp['n_images']} images, {comp['n_patients']} patients, folds {comp['folds']}"
    doc.table(["metric", a, b, "difference [95% CI]"], rows, caption=caption)
    test = comp["mcnemar"]
    doc.paragraph(f"McNemar (per-image correctness): {test['only_a_correct']} images only {a} got right, "
                  f"{test['only_b_correct']} only {b}; exact two-sided p = {fmt(test['p_value'], 4)} "
                  "(optimistic: images of a patient are not independent).")


def _saliency(doc: HtmlDocument, saliency: dict, pngs: dict) -> None:
    doc.heading("Where the student looked (Grad-CAM)")
    doc.paragraph("For each true class, the student's most confident correct and most confident wrong test "
                  "B-scans; red marks the regions that raised the predicted class's score most (Grad-CAM on the "
                  "last feature stage). A map shows what the model used, not whether that was right.", "muted")
    for n, item in enumerate(saliency.get("items", [])):
        name = f"saliency_{n:02d}_{safe_name(item['true'])}.png"
        pngs[name] = item["png"]
        verdict = "correct" if item["true"] == item["predicted"] else "wrong"
        doc.figure(item["png"], f"true {item['true']}, predicted {item['predicted']} ({verdict}, p = "
                                f"{item['confidence']:.2f}, fold {item['fold']}): {item['id']}")
    if not saliency.get("items") or saliency.get("note"):
        doc.paragraph(f"Grad-CAM examples: {saliency.get('note') or 'none available'}.", "muted")


def render_report(report: dict, curves: dict[str, dict], log: Sequence[dict],
                  saliency: dict | None = None) -> tuple[str, dict[str, bytes]]:
    """``(html, {file name: png bytes})`` for the report dict, per-class ROC points and log.jsonl records
    (and the Grad-CAM examples of :func:`medkd.report_saliency.saliency_gallery`, when given)."""
    pngs = _plots(report, curves, log)
    title = f"OCT classification report: {report['run'].get('recipe') or report['run']['folder']}"
    doc = HtmlDocument(title)
    settings = report["settings"]
    lines = [f"Run folder {report['run']['folder']}; classes {', '.join(report['classes'])}; "
             f"{settings['n_boot']} patient bootstrap resamples (seed {settings['seed']}); "
             f"ECE with {settings['ece_bins']} bins; predictions are the {settings['prediction']}."]
    objective = settings.get("student_objective")
    if objective:
        params = ", ".join(f"{k}={v}" for k, v in (objective.get("kd_loss_params") or {}).items())
        lines.append(f"Student objective: {objective['ce_weight']} x CE + {objective['kd_weight']} x "
                     f"{objective['kd_loss']} (T={objective['temperature']}{', ' + params if params else ''}), "
                     f"distillation weight ramped over {objective['kd_warmup_epochs']} epoch(s)"
                     + (f"; + {objective['feature_weight']} x {objective['feature_loss']} on the "
                        f"{objective['feature_path']!r} features" if objective.get("feature_loss") else "")
                     + f"; distillation {settings.get('distillation', 'offline')}.")
    HtmlParts.preamble(doc, report, lines, HOW_TO_READ)
    _protocol(doc, report)
    _results(doc, report, pngs)
    HtmlParts.comparisons(doc, report, "Difference = student minus the other model, on the images both predicted, "
                          "with a 95% interval from a paired bootstrap over patients (both models see the same "
                          "resampled patients). For ECE a negative difference favours the student.", _comparison)
    models = report["models"]
    doc.heading("Confusion matrices")
    doc.paragraph("Rows are the true class, columns the predicted class; counts pooled over the test folds, "
                  "shading by row share.", "muted")
    for name in models:
        doc.figure(pngs.get(f"{safe_name(name)}_confusion.png"), name)
    doc.heading("ROC curves (one class vs the rest)")
    for name in models:
        doc.figure(pngs.get(f"{safe_name(name)}_roc.png"), name)
    doc.heading("Calibration (reliability diagrams)")
    doc.paragraph("Bars: accuracy of the images in each confidence bin; on the dashed line confidence equals "
                  "accuracy. Bars below the line mean over-confidence.", "muted")
    for name in models:
        doc.figure(pngs.get(f"{safe_name(name)}_reliability.png"), name)
    HtmlParts.training_curves(doc, models, pngs)
    if saliency is not None:
        _saliency(doc, saliency, pngs)
    HtmlParts.profile(doc, models)
    HtmlParts.files(doc, "per-fold and per-class")
    return doc.render(), {k: v for k, v in pngs.items() if v is not None}
