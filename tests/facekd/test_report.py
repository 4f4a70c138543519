"""facekd report from a fake but realistic run folder (student better than baseline by construction)."""

import json
import re

import cv2
import numpy as np
import pytest
import yaml

import kdcore.report.bootstrap as bootstrap_module
from facekd.report import build_report
from kdcore.atomic import atomic_write_json
from kdcore.cv import make_fold_manifest
from kdcore.predictions import write_predictions
from kdcore.report import bootstrap_samples, difference_samples, percentile_ci
from kdcore.run_folder import RunDir

K = 68
NOISE = {"tough": 1.5, "tolerant": 2.0, "student": 2.5, "baseline": 6.0}  # pixels; eye distance is 60 px
METRICS = ("nme", "fr", "auc")


def strict_loads(text):
    def refuse(name):
        raise ValueError(f"non-strict JSON constant {name}")
    return json.loads(text, parse_constant=refuse)


def make_run(root, n_subjects=24, seed=0, models=tuple(NOISE), with_images=True, big_subject=False):
    rng = np.random.default_rng(seed)
    items = []  # (id, subject, subset)
    for s in range(n_subjects):
        n_faces = 30 if big_subject and s == 0 else int(rng.integers(1, 4))
        items += [(f"s{s:02d}_{j}", f"s{s:02d}", "common" if s % 3 else "challenging") for j in range(n_faces)]
    manifest = make_fold_manifest([i[1] for i in items], None, n_folds=3, val_fraction=0.25, seed=0,
                                  group_name="subject")
    run = root / "run"
    run.mkdir(parents=True)
    manifest.save(run / "folds.json")
    data_root = root / "data"
    (run / "config.yaml").write_text(yaml.safe_dump({"name": "kd_loss_test", "data": {"root": str(data_root)}}))
    template = rng.uniform(40, 120, size=(K, 2))
    template[36], template[45] = (50, 70), (110, 70)  # outer eye corners 60 px apart
    gt = template[None] + rng.normal(0, 2, size=(len(items), K, 2))
    shared = rng.normal(size=gt.shape)  # part of the error every model shares: correlated models
    hard = np.array([1.0 if i[2] == "challenging" else 0.6 for i in items])[:, None, None]
    dataset = []
    for n, (face_id, subject, subset) in enumerate(items):
        dataset.append({"id": face_id, "path": f"images/{face_id}.png", "subject": subject, "subset": subset})
        if with_images:
            (data_root / "images").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(data_root / "images" / f"{face_id}.png"), np.full((160, 160, 3), 90 + n % 50, np.uint8))
    atomic_write_json(run / "dataset.json", {"n_points": K, "items": dataset})
    test_fold = {s: f.fold for f in manifest.folds for s in f.test}
    for name in models:
        pred = gt + NOISE[name] * hard * (0.8 * shared + 0.6 * rng.normal(size=gt.shape))
        for split in manifest.folds:
            folder = run / "folds" / f"fold_{split.fold}" / name
            rows = []
            for n, (face_id, subject, subset) in enumerate(items):
                if test_fold[subject] != split.fold:
                    continue
                row = {"id": face_id, "subject": subject, "fold": split.fold, "subset": subset, "width": 160,
                       "height": 160}
                row.update({f"{c}{k}": float(pred[n, k, j]) for k in range(K) for j, c in enumerate("xy")})
                row.update({f"g{c}{k}": float(gt[n, k, j]) for k in range(K) for j, c in enumerate("xy")})
                rows.append(row)
            columns = list(rows[0])
            write_predictions(folder / "predictions.csv", rows, columns)
            atomic_write_json(folder / "model.json", {"role": name, "fold": split.fold, "task": "landmarks",
                                                      "n_points": K, "scheme": "ibug68"})
            RunDir(run).finish_model(name, split.fold, {"model": name, "fold": split.fold, "manifest": manifest.sha})
    with open(run / "log.jsonl", "w") as f:
        for name in models:
            for fold in range(3):
                for epoch in range(3):
                    f.write(json.dumps({"model": name, "fold": fold, "epoch": epoch, "split": "train",
                                        "loss": 1 / (epoch + 1), "val_nme": 0.08 - 0.01 * epoch}) + "\n")
    atomic_write_json(run / "model_profile.json", {
        "tough": {"params": 25_000_000, "flops": 4e9, "latency_ms": {"median_ms": 40.0}, "input_size": [3, 256, 256]},
        "student": {"params": 2_000_000, "flops": 0.3e9, "latency_ms": {"median_ms": 4.0}, "input_size": [3, 256, 256]}})
    return run, items


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    run, items = make_run(tmp_path_factory.mktemp("face"))
    return run, items, build_report(run, n_boot=60, seed=0)


def read_nmes(run, name):
    """Per-face NME recomputed here from the CSV with numpy only (independent of facekd.metrics)."""
    out = {}
    for fold in range(3):
        with open(run / "folds" / f"fold_{fold}" / name / "predictions.csv") as f:
            header = f.readline().strip().split(",")
            for line in f:
                row = dict(zip(header, line.strip().split(",")))
                p = np.array([[float(row[f"x{k}"]), float(row[f"y{k}"])] for k in range(K)])
                g = np.array([[float(row[f"gx{k}"]), float(row[f"gy{k}"])] for k in range(K)])
                out[row["id"]] = (np.sqrt(((p - g) ** 2).sum(1)).mean() / np.hypot(*(g[36] - g[45])), row["subject"],
                                  row["subset"], fold)
    return out


def test_every_required_key_for_every_model(built):
    run, _, report = built
    assert list(report["models"]) == ["tough", "tolerant", "student", "baseline"]
    for model in report["models"].values():
        assert len(model["folds"]) == 3
        for metric in METRICS:
            assert all(metric in f for f in model["folds"])
            assert {"mean", "std", "ci95", "pooled"} <= set(model["summary"][metric])
            for subset in ("common", "challenging"):
                assert {"pooled", "ci95"} <= set(model["subsets"][subset][metric])
        assert len(model["per_landmark_error"]) == K
        assert len(model["ced"]["x"]) == len(model["ced"]["y"])
    for key in ("student_vs_tough", "student_vs_tolerant", "student_vs_baseline"):
        comparison = report["comparisons"][key]
        assert comparison["available"] and {"difference", "ci95"} <= set(comparison["metrics"]["nme"])
    assert report["models"]["student"]["profile"]["params"] == 2_000_000
    assert report["overlays"]["available"] and len(report["overlays"]["examples"]) == 3
    assert report["overlays"]["examples"][0]["path"].startswith("images/")
    strict_loads((run / "report.json").read_text())
    for name in ("ced.png", "per_landmark.png", "subsets.png", "overlays.png", "student_training.png",
                 "student_folds.csv", "student_per_landmark.csv", "summary.csv", "subsets.csv", "comparisons.csv"):
        assert (run / "report" / name).exists(), name


def test_numbers_match_an_independent_computation(built):
    run, _, report = built
    nmes = read_nmes(run, "student")
    values = np.array([v[0] for v in nmes.values()])
    summary = report["models"]["student"]["summary"]
    assert summary["nme"]["pooled"] == pytest.approx(values.mean())
    assert summary["fr"]["pooled"] == pytest.approx(np.mean(values > 0.1))
    # AUC@0.1 by numerical integration of the empirical CED on a fine grid
    grid = np.linspace(0, 0.1, 20001)
    ced = (values[None, :] <= grid[:, None]).mean(1)
    assert summary["auc"]["pooled"] == pytest.approx(np.trapezoid(ced, grid) / 0.1, abs=1e-3)
    fold_means = [np.mean([v[0] for v in nmes.values() if v[3] == k]) for k in range(3)]
    assert summary["nme"]["mean"] == pytest.approx(np.mean(fold_means))
    hard = [v[0] for v in nmes.values() if v[2] == "challenging"]
    assert report["models"]["student"]["subsets"]["challenging"]["nme"]["pooled"] == pytest.approx(np.mean(hard))
    assert summary["nme"]["pooled"] < report["models"]["baseline"]["summary"]["nme"]["pooled"]
    assert report["comparisons"]["student_vs_baseline"]["metrics"]["nme"]["difference"] < 0


def test_intervals_contain_the_pooled_estimate(built):
    _, _, report = built
    for model in report["models"].values():
        for metric in METRICS:
            entry = model["summary"][metric]
            assert entry["ci95"][0] <= entry["pooled"] <= entry["ci95"][1], metric


def test_paired_interval_is_narrower_than_unpaired(built):
    run, _, report = built
    paired = report["comparisons"]["student_vs_baseline"]["metrics"]["nme"]["ci95"]
    samples = {}
    for name, seed in (("student", 21), ("baseline", 22)):
        table = read_nmes(run, name)
        ids = sorted(table)
        values = np.array([table[i][0] for i in ids])
        samples[name] = bootstrap_samples(lambda idx, v=values: {"nme": v[idx].mean()}, len(ids),
                                          [table[i][1] for i in ids], n_boot=60, seed=seed)[1]
    unpaired = percentile_ci(difference_samples(samples["student"], samples["baseline"]), "nme")
    assert paired[1] - paired[0] < unpaired[1] - unpaired[0]


def test_bootstrap_resamples_subjects(tmp_path, monkeypatch):
    run, items = make_run(tmp_path, n_subjects=9, models=("student", "baseline"), big_subject=True,
                             with_images=False)
    size = {}
    for _, subject, _ in items:
        size[subject] = size.get(subject, 0) + 1
    groups_seen, resamples = [], []
    original = bootstrap_module.group_bootstrap

    def spy(metric, n_items, groups, **kwargs):
        groups_seen.append(list(groups))
        return original(lambda idx: resamples.append((list(groups), np.asarray(idx))) or metric(idx), n_items,
                        groups, **kwargs)

    monkeypatch.setattr(bootstrap_module, "group_bootstrap", spy)
    report = build_report(run, n_boot=20)
    subjects = sorted({i[1] for i in items})
    assert groups_seen[0] == [i[1] for i in sorted(items)]
    for groups, idx in resamples[1:40]:
        chosen, counts = np.unique(np.asarray(groups)[idx], return_counts=True)
        assert all(c % size[s] == 0 for s, c in zip(chosen, counts))
    assert report["models"]["student"]["n_subjects"] == len(subjects)
    # no images on disk: overlays are skipped and the HTML says why
    assert report["overlays"]["available"] is False and "not reachable" in report["overlays"]["reason"]
    assert "No overlays" in (run / "report.html").read_text()


def test_html_is_one_self_contained_file(built):
    run, _, _ = built
    html = (run / "report.html").read_text()
    sources = re.findall(r'src="([^"]*)"', html)
    assert len(sources) >= 6 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<script" not in html and "<link" not in html and "http://" not in html and "https://" not in html
    for text in ("NME", "FR@0.1", "subject", "Examples", "latency"):
        assert text in html


def test_rebuild_is_identical(built):
    run, _, _ = built
    first = (run / "report.json").read_bytes()
    build_report(run, n_boot=60, seed=0)
    assert (run / "report.json").read_bytes() == first


def test_partial_run_lists_the_missing_fold(tmp_path):
    run, _ = make_run(tmp_path, models=("student", "baseline"), with_images=False)
    (run / "folds" / "fold_1" / "student" / "done.json").unlink()
    report = build_report(run, n_boot=30)
    student = report["models"]["student"]
    assert student["folds_missing"] == [1] and [f["fold"] for f in student["folds"]] == [0, 2]
    assert report["comparisons"]["student_vs_baseline"]["folds"] == [0, 2]
    assert report["comparisons"]["student_vs_tough"]["available"] is False
    assert "fold(s) [1] missing" in (run / "report.html").read_text()
    strict_loads((run / "report.json").read_text())


def test_overlays_on_real_faces(tmp_path, shared_fixtures):
    from facekd.pts_files import read_pts

    root = shared_fixtures / "faces-lfpw"
    faces = sorted(p for p in root.glob("*.png") if p.with_suffix(".pts").exists())
    if len(faces) < 6:
        pytest.skip("too few LFPW fixture faces")
    rng = np.random.default_rng(0)
    ids = [p.stem for p in faces]
    manifest = make_fold_manifest(ids, None, n_folds=3, val_fraction=0.25, seed=0, group_name="subject")
    run = tmp_path / "run"
    run.mkdir()
    manifest.save(run / "folds.json")
    (run / "config.yaml").write_text(yaml.safe_dump({"name": "real", "data": {"root": str(root)}}))
    atomic_write_json(run / "dataset.json", {"items": [{"id": p.stem, "path": p.name} for p in faces]})
    truth = {p.stem: read_pts(p.with_suffix(".pts"), 68) for p in faces}
    for split in manifest.folds:
        folder = run / "folds" / f"fold_{split.fold}" / "student"
        rows = []
        for face in split.test:
            pred = truth[face] + rng.normal(0, 2.0, size=(68, 2))
            row = {"id": face, "subject": face, "fold": split.fold, "subset": ""}
            row.update({f"{c}{k}": float(pred[k, j]) for k in range(68) for j, c in enumerate("xy")})
            row.update({f"g{c}{k}": float(truth[face][k, j]) for k in range(68) for j, c in enumerate("xy")})
            rows.append(row)
        write_predictions(folder / "predictions.csv", rows, list(rows[0]))
        atomic_write_json(folder / "model.json", {"n_points": 68, "scheme": "ibug68"})
        atomic_write_json(folder / "done.json", {"manifest": manifest.sha})
    report = build_report(run, n_boot=20)
    assert report["overlays"]["available"] and report["overlays"]["problems"] == []
    assert report["models"]["student"]["subsets"] == {}  # no subset column values: no per-subset table
    assert (run / "report" / "overlays.png").stat().st_size > 10_000


def test_overlays_find_synthetic_faces_inside_the_run_folder(tmp_path):
    run, _ = make_run(tmp_path, n_subjects=9, models=("student",))
    (tmp_path / "data").rename(run / "data")  # a synthetic run without --data-root writes RUN/data
    (run / "config.yaml").write_text(yaml.safe_dump({"name": "synthetic"}))
    report = build_report(run, n_boot=10)
    assert report["overlays"]["available"] and (run / "report" / "overlays.png").exists()
    assert report["comparisons"]["student_vs_baseline"]["available"] is False


def test_faces_in_several_subsets_are_counted_in_each():
    from facekd.report import LandmarkPredictions, _subsets

    n = 6
    nmes = np.array([0.02, 0.04, 0.2, 0.05, 0.03, 0.15])
    data = LandmarkPredictions("student", [0], np.array([f"f{i}" for i in range(n)]), np.array([f"s{i}" for i in range(n)]),
                               np.zeros(n, int), np.array(["test;pose", "test", "test;pose;blur", "test", "test;blur", ""]),
                               np.zeros((n, 68, 2)), np.zeros((n, 68, 2)), nmes)
    out = _subsets(data, n_boot=20, seed=0)
    assert sorted(out) == ["blur", "pose", "test"]
    assert out["test"]["n_images"] == 5 and out["pose"]["n_images"] == 2 and out["blur"]["n_images"] == 2
    assert out["pose"]["nme"]["pooled"] == pytest.approx((0.02 + 0.2) / 2)
