"""medkd report from a fake but realistic run folder (predictions made with numpy, student better than baseline)."""

import json
import re

import numpy as np
import pytest
import yaml

import kdcore.report.bootstrap as bootstrap_module
from kdcore.atomic import atomic_write_json
from kdcore.cv import make_fold_manifest
from kdcore.predictions import write_predictions
from kdcore.report import bootstrap_samples, difference_samples, percentile_ci
from kdcore.run_folder import RunDir
from medkd.report import build_report

CLASSES = ["CNV", "DME", "DRUSEN", "NORMAL"]
METRICS = ("accuracy", "sensitivity", "specificity", "f1", "auc", "ece")
STRENGTH = {"teacher": 3.0, "student": 2.4, "baseline": 1.0}


def strict_loads(text):
    def refuse(name):
        raise ValueError(f"non-strict JSON constant {name}")
    return json.loads(text, parse_constant=refuse)


def make_run(root, n_patients=36, seed=0, models=tuple(STRENGTH), big_patient=False):
    """A run folder as `medkd run` writes it; returns (path, items) with items[i] = (id, patient, class)."""
    rng = np.random.default_rng(seed)
    items = []
    for p in range(n_patients):
        n_images = 40 if big_patient and p == 0 else int(rng.integers(1, 6))
        items += [(f"p{p:03d}-{j}", f"p{p:03d}", p % len(CLASSES)) for j in range(n_images)]
    manifest = make_fold_manifest([i[1] for i in items], [CLASSES[i[2]] for i in items], n_folds=3,
                                  val_fraction=0.25, seed=0)
    root.mkdir(parents=True, exist_ok=True)
    manifest.save(root / "folds.json")
    (root / "config.yaml").write_text(yaml.safe_dump({"name": "kd_oct_test", "report": {"bootstrap": 40}}))
    targets = np.array([i[2] for i in items])
    shared = rng.normal(size=(len(items), len(CLASSES)))  # shared noise: the models' errors are correlated
    test_fold = {p: f.fold for f in manifest.folds for p in f.test}
    for name in models:
        logits = STRENGTH[name] * np.eye(len(CLASSES))[targets] + shared + 0.4 * rng.normal(size=shared.shape)
        probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        for split in manifest.folds:
            folder = root / "folds" / f"fold_{split.fold}" / name
            rows = [{"id": item[0], "patient": item[1], "eye": "R", "fold": split.fold, "target": CLASSES[item[2]],
                     "pred": CLASSES[int(probs[i].argmax())], **{f"prob_{c}": float(probs[i, k]) for k, c in enumerate(CLASSES)}}
                    for i, item in enumerate(items) if test_fold[item[1]] == split.fold]
            write_predictions(folder / "predictions.csv", rows,
                              ["id", "patient", "eye", "fold", "target", "pred"] + [f"prob_{c}" for c in CLASSES])
            atomic_write_json(folder / "model.json", {"arch": "resnet18", "role": name, "fold": split.fold,
                                                      "task": "classification", "classes": CLASSES})
            RunDir(root).finish_model(name, split.fold, {"model": name, "fold": split.fold, "manifest": manifest.sha})
    with open(root / "log.jsonl", "w") as f:
        for name in models:
            for fold in range(3):
                for epoch in range(4):
                    f.write(json.dumps({"model": name, "fold": fold, "epoch": epoch, "split": "train",
                                        "loss": 1.0 / (epoch + 1), "val_loss": 1.2 / (epoch + 1), "val_auc": 0.7 + 0.05 * epoch}) + "\n")
                f.write(json.dumps({"model": name, "fold": fold, "epoch": 3, "split": "swa", "val_loss": 0.25}) + "\n")
    atomic_write_json(root / "model_profile.json", {
        "teacher": {"params": 197_000_000, "flops": 34e9, "latency_ms": {"median_ms": 210.0}, "input_size": 384},
        "student": {"params": 7_700_000, "flops": 1.0e9, "latency_ms": {"median_ms": 18.5}, "input_size": 384}})
    atomic_write_json(root / "audit.json", {"n_blocking": 0, "n_warnings": 1, "problems_by_kind": {"near_duplicate": 1},
                                            "excluded": ["p099-0"], "problems": [{"kind": "near_duplicate"}]})
    return root, items


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    run, items = make_run(tmp_path_factory.mktemp("run") / "run")
    return run, items, build_report(run, n_boot=60, seed=0)


def test_every_required_key_for_every_model(built):
    run, _, report = built
    assert report["classes"] == CLASSES
    assert set(report["models"]) == {"teacher", "student", "baseline"}
    for model in report["models"].values():
        assert len(model["folds"]) == 3 and model["folds_missing"] == []
        for metric in METRICS:
            assert all(metric in fold for fold in model["folds"])
            assert {"mean", "std", "ci95", "pooled"} <= set(model["summary"][metric])
        for cls in CLASSES:
            for metric in ("sensitivity", "specificity", "f1", "auc"):
                entry = model["per_class"][cls][metric]
                assert {"pooled", "ci95", "folds"} <= set(entry) and len(entry["folds"]) == 3
        assert np.array(model["confusion_matrix"]).shape == (4, 4)
        assert len(model["reliability"]) == 15
    assert report["models"]["student"]["profile"]["params"] == 7_700_000
    assert report["models"]["baseline"]["profile"] is None
    protocol = report["protocol"]
    assert protocol["patients"] == 36 and len(protocol["folds"]) == 3
    assert sum(f["test"] for f in protocol["folds"]) == 36
    assert protocol["audit"]["n_excluded"] == 1 and "problems" not in protocol["audit"]
    for key in ("student_vs_teacher", "student_vs_baseline"):
        comparison = report["comparisons"][key]
        assert comparison["available"]
        for metric in METRICS:
            assert {"difference", "ci95"} <= set(comparison["metrics"][metric])
        assert {"only_a_correct", "only_b_correct", "p_value"} <= set(comparison["mcnemar"])
    strict_loads((run / "report.json").read_text())
    for name in ("student_folds.csv", "student_per_class.csv", "summary.csv", "comparisons.csv",
                 "student_confusion.png", "student_roc.png", "student_reliability.png", "student_training.png"):
        assert (run / "report" / name).exists(), name


def test_numbers_match_an_independent_count(built):
    run, items, report = built
    correct, per_fold = [], {}
    for fold in range(3):
        with open(run / "folds" / f"fold_{fold}" / "student" / "predictions.csv") as f:
            header = f.readline().strip().split(",")
            rows = [dict(zip(header, line.strip().split(","))) for line in f]
        hits = [max(CLASSES, key=lambda c: float(r[f"prob_{c}"])) == r["target"] for r in rows]
        per_fold[fold] = np.mean(hits)
        correct += hits
    student = report["models"]["student"]
    assert student["summary"]["accuracy"]["pooled"] == pytest.approx(np.mean(correct))
    assert student["summary"]["accuracy"]["mean"] == pytest.approx(np.mean(list(per_fold.values())))
    assert student["summary"]["accuracy"]["std"] == pytest.approx(np.std(list(per_fold.values()), ddof=1))
    assert student["n_images"] == len(items) and student["n_patients"] == 36
    # by construction the student beats the baseline
    assert student["summary"]["accuracy"]["pooled"] > report["models"]["baseline"]["summary"]["accuracy"]["pooled"]
    assert report["comparisons"]["student_vs_baseline"]["metrics"]["accuracy"]["difference"] > 0


def test_intervals_contain_the_pooled_estimate(built):
    _, _, report = built
    for model in report["models"].values():
        for metric in METRICS:
            entry = model["summary"][metric]
            assert entry["ci95"][0] <= entry["pooled"] <= entry["ci95"][1], metric
        for cls in CLASSES:
            entry = model["per_class"][cls]["sensitivity"]
            assert entry["ci95"][0] <= entry["pooled"] <= entry["ci95"][1]


def test_paired_interval_is_narrower_than_unpaired(built):
    run, items, report = built
    paired = report["comparisons"]["student_vs_baseline"]["metrics"]["accuracy"]["ci95"]
    # Unpaired: each model resampled on its own patients (different seeds), then differenced.
    patients, correct = {}, {}
    for name in ("student", "baseline"):
        rows = []
        for fold in range(3):
            with open(run / "folds" / f"fold_{fold}" / name / "predictions.csv") as f:
                header = f.readline().strip().split(",")
                rows += [dict(zip(header, line.strip().split(","))) for line in f]
        rows.sort(key=lambda r: r["id"])
        patients[name] = [r["patient"] for r in rows]
        correct[name] = np.array([max(CLASSES, key=lambda c: float(r[f"prob_{c}"])) == r["target"] for r in rows], float)
    samples = {name: bootstrap_samples(lambda i, n=name: {"acc": correct[n][i].mean()}, len(patients[name]),
                                       patients[name], n_boot=60, seed=seed)[1]
               for name, seed in (("student", 11), ("baseline", 12))}
    unpaired = percentile_ci(difference_samples(samples["student"], samples["baseline"]), "acc")
    assert paired[1] - paired[0] < unpaired[1] - unpaired[0]


def test_bootstrap_resamples_whole_patients(tmp_path, monkeypatch):
    run, items = make_run(tmp_path / "run", n_patients=16, big_patient=True, models=("student", "baseline"))
    size = {}
    for _, patient, _ in items:
        size[patient] = size.get(patient, 0) + 1
    seen_groups, resamples = [], []
    original = bootstrap_module.group_bootstrap

    def spy(metric, n_items, groups, **kwargs):
        seen_groups.append(list(groups))
        return original(lambda idx: resamples.append(np.asarray(idx)) or metric(idx), n_items, groups, **kwargs)

    monkeypatch.setattr(bootstrap_module, "group_bootstrap", spy)
    monkeypatch.setattr(bootstrap_module, "paired_group_bootstrap",
                        lambda a, b, n, g, **kw: spy(lambda i: a(i) - b(i), n, g, **kw))
    build_report(run, n_boot=20)
    sorted_items = sorted(items)
    assert seen_groups and all(groups == [i[1] for i in sorted_items] for groups in seen_groups)
    patient_of = np.array([i[1] for i in sorted_items])
    for idx in resamples[1:50]:
        chosen, counts = np.unique(patient_of[idx], return_counts=True)
        # every resampled patient comes with all of its images (a multiple of its image count)
        assert all(c % size[p] == 0 for p, c in zip(chosen, counts))


def test_html_is_one_self_contained_file(built):
    run, _, _ = built
    html = (run / "report.html").read_text()
    sources = re.findall(r'src="([^"]*)"', html)
    assert len(sources) >= 10 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<script" not in html and "<link" not in html and "http://" not in html and "https://" not in html
    for text in ("not a medical device", "Sensitivity", "patients", "McNemar", "Training curves", "latency"):
        assert text in html


def test_rebuild_is_identical(built):
    run, _, _ = built
    first = (run / "report.json").read_bytes()
    build_report(run, n_boot=60, seed=0)
    assert (run / "report.json").read_bytes() == first
    assert not (run / ".report.staging").exists() and not (run / ".report.old").exists()


def test_partial_run_lists_the_missing_fold(tmp_path):
    run, _ = make_run(tmp_path / "run", n_patients=24, models=("student", "baseline"))
    (run / "folds" / "fold_2" / "baseline" / "done.json").unlink()  # fold 2 of the baseline still training
    report = build_report(run, n_boot=30)
    baseline = report["models"]["baseline"]
    assert baseline["folds_done"] == [0, 1] and baseline["folds_missing"] == [2]
    assert [f["fold"] for f in baseline["folds"]] == [0, 1]
    assert report["protocol"]["incomplete"] == {"baseline": [2]}
    comparison = report["comparisons"]["student_vs_baseline"]
    assert comparison["folds"] == [0, 1] and comparison["n_images"] == baseline["n_images"]
    assert any("baseline" in note and "[2]" in note for note in report["notes"])
    assert "fold(s) [2] missing" in (run / "report.html").read_text()
    strict_loads((run / "report.json").read_text())


def test_run_without_teacher_marks_comparison_unavailable(tmp_path):
    run, _ = make_run(tmp_path / "run", models=("student", "baseline"))
    (run / "log.jsonl").unlink()
    report = build_report(run, n_boot=0)
    assert report["comparisons"]["student_vs_teacher"]["available"] is False
    assert report["models"]["student"]["summary"]["auc"]["ci95"] is None
    assert "No log.jsonl" in (run / "report.html").read_text()
    strict_loads((run / "report.json").read_text())
