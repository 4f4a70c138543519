"""End to end: `medkd run` on a tiny synthetic dataset, then the files a user and a reviewer rely on."""

import contextlib
import csv
import hashlib
import inspect
import json
from pathlib import Path

import pytest

from kdcore.cv import load_manifest
from medkd.cli import main
from tests.medkd.tiny import write_tiny_recipe

METRICS = ("accuracy", "sensitivity", "specificity", "f1", "auc", "ece")
MODELS = ("teacher", "student", "baseline")


@pytest.fixture(scope="module")
def teacher_loads() -> list[dict]:
    """Every teacher checkpoint a student loaded while :func:`recording_teacher_loads` was on."""
    return []


@contextlib.contextmanager
def recording_teacher_loads(loads: list[dict]):
    """Record each teacher a student loads: its file, the digest of the bytes loaded, and the metadata the student
    asked it to have (``FrozenTeacher.from_weights`` is the one door through which a student gets a teacher)."""
    from kdcore.teacher import FrozenTeacher

    original = FrozenTeacher.from_weights.__func__
    signature = inspect.signature(original)

    def recording(cls, *args, **kwargs):
        bound = signature.bind(cls, *args, **kwargs).arguments
        path = Path(bound["path"])
        loads.append({"path": path, "sha256": sha256(path), "expected": dict(bound["expected"])})
        return original(cls, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(FrozenTeacher, "from_weights", classmethod(recording))
        yield


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, teacher_loads):
    folder = tmp_path_factory.mktemp("medkd_run")
    recipe = write_tiny_recipe(folder)
    with recording_teacher_loads(teacher_loads):
        assert main(["run", str(recipe), "--out", str(folder / "run")]) == 0
    return folder / "run"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_report_has_every_key_for_all_three_models(tiny_run):
    report = json.loads((tiny_run / "report.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    for model in MODELS:
        entry = report["models"][model]
        assert len(entry["folds"]) == 2
        for metric in METRICS:
            assert metric in entry["folds"][0]
            summary = entry["summary"][metric]
            assert set(summary) >= {"mean", "std", "ci95"}
        assert set(entry["per_class"]) == {"NORMAL", "DRUSEN", "CNV"}
    assert report["classes"] == ["NORMAL", "DRUSEN", "CNV"]
    assert {"student_vs_teacher", "student_vs_baseline"} <= set(report["comparisons"])
    assert (tiny_run / "report.html").read_text().count("data:image/png;base64,") >= 3


def test_one_manifest_with_disjoint_test_patients_shared_by_all_models(tiny_run):
    manifest = load_manifest(tiny_run / "folds.json")
    tests = [set(f.test) for f in manifest.folds]
    assert not tests[0] & tests[1]
    for split in manifest.folds:
        for model in MODELS:
            folder = tiny_run / "folds" / f"fold_{split.fold}" / model
            assert json.loads((folder / "done.json").read_text())["manifest"] == manifest.sha
            assert json.loads((folder / "model.json").read_text())["manifest"] == manifest.sha
            with open(folder / "predictions.csv") as f:
                patients = {row["patient"] for row in csv.DictReader(f)}
            assert patients <= set(split.test), "predictions only for the fold's test patients"
            assert not (folder / "last.pt").exists()


def test_teacher_keeps_its_swa_average(tiny_run):
    meta = json.loads((tiny_run / "folds" / "fold_0" / "teacher" / "model.json").read_text())
    assert meta["kept"] == "swa"
    profile = json.loads((tiny_run / "model_profile.json").read_text())
    assert profile["teacher"]["params"] > profile["student"]["params"]
    assert profile["student"]["latency_ms"]["median_ms"] > 0


def test_students_know_their_teacher(tiny_run, teacher_loads):
    """Each fold's student was distilled from that fold's teacher: the weights it loaded are the bytes of
    ``fold_k/teacher/model.safetensors``, and it asked for a teacher of fold k on this run's folds."""
    manifest = load_manifest(tiny_run / "folds.json")
    expected_files = [tiny_run / "folds" / f"fold_{split.fold}" / "teacher" / "model.safetensors"
                      for split in manifest.folds]
    assert [load["path"] for load in teacher_loads] == expected_files
    for split, load in zip(manifest.folds, teacher_loads):
        assert load["sha256"] == sha256(load["path"])
        assert load["expected"]["fold"] == split.fold and load["expected"]["manifest"] == manifest.sha
        assert load["expected"]["role"] == "teacher"
        meta = json.loads((load["path"].parent / "model.json").read_text())
        assert (meta["fold"], meta["manifest"], meta["role"]) == (split.fold, manifest.sha, "teacher")


def test_run_folder_records_environment_and_streams(tiny_run):
    env = json.loads((tiny_run / "environment.json").read_text())
    assert env["packages"]["torch"] and env["packages"]["timm"] and env["seed"] == 0
    lines = (tiny_run / "log.jsonl").read_text().splitlines()
    assert any(json.loads(line).get("model") == "student" for line in lines)
    assert (tiny_run / "metrics.csv").read_text().startswith("time,model,fold,epoch,split,name,value")
    assert (tiny_run / "audit.json").exists() and (tiny_run / "dataset.json").exists()


def test_report_rebuilds_identically_from_files(tiny_run):
    before = (tiny_run / "report.json").read_text()
    assert main(["report", str(tiny_run), "--bootstrap", "50"]) == 0
    assert (tiny_run / "report.json").read_text() == before


def fold_files(run: Path) -> dict[str, tuple[int, str]]:
    return {str(p.relative_to(run)): (p.stat().st_mtime_ns, sha256(p)) for p in sorted((run / "folds").rglob("*"))
            if p.is_file()}


def training_records(run: Path) -> list[dict]:
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [r for r in records if r.get("split") == "train"]


def test_reusing_the_out_folder_needs_resume(tiny_run, teacher_loads, capsys):
    recipe = tiny_run.parent / "tiny_oct.yaml"
    assert main(["run", str(recipe), "--out", str(tiny_run)]) == 2
    assert "--resume" in capsys.readouterr().err
    # with --resume everything is already complete: nothing is retrained, reloaded or rewritten
    files, trained, loads = fold_files(tiny_run), training_records(tiny_run), []
    with recording_teacher_loads(loads):
        assert main(["run", str(recipe), "--out", str(tiny_run), "--resume"]) == 0
    assert fold_files(tiny_run) == files
    assert training_records(tiny_run) == trained
    assert loads == []


def test_fold_jobs_on_two_machines_merge_into_the_same_report(tiny_run, tmp_path, capsys):
    recipe = tiny_run.parent / "tiny_oct.yaml"
    data = tiny_run / "data"  # both "machines" read the same dataset
    assert main(["run", str(recipe), "--data-root", str(data), "--out", str(tmp_path / "a"), "--folds", "0"]) == 0
    assert main(["run", str(recipe), "--data-root", str(data), "--out", str(tmp_path / "b"), "--folds", "1"]) == 0
    assert not (tmp_path / "a" / "report.json").exists(), "a partial run must not write a report"
    capsys.readouterr()
    # asked for anyway, a report over some folds says so on the terminal, not only inside the report
    assert main(["report", str(tmp_path / "b"), "--bootstrap", "20"]) == 0
    assert "warning: partial report: student: fold(s) [0] not completed" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "a"), "--merge", str(tmp_path / "b"), "--bootstrap", "50"]) == 0
    merged = json.loads((tmp_path / "a" / "report.json").read_text())
    assert [f["fold"] for f in merged["models"]["student"]["folds"]] == [0, 1]
    for fold in (0, 1):
        for model in MODELS:
            relative = f"folds/fold_{fold}/{model}/predictions.csv"
            assert (tmp_path / "a" / relative).read_text() == (tiny_run / relative).read_text(), relative


def test_patient_ids_are_hashed_when_privacy_is_on(tmp_path):
    recipe = write_tiny_recipe(tmp_path, privacy={"hash_patient_ids": True, "salt": "s3cret"},
                               cv={"folds": 2}, teacher={"train": {"epochs": 1, "swa": {"enabled": False}}},
                               student={"train": {"epochs": 1}}, baseline={"enabled": False})
    assert main(["run", str(recipe), "--out", str(tmp_path / "run")]) == 0
    run = tmp_path / "run"
    with open(run / "folds" / "fold_0" / "student" / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and all(r["patient"].startswith("P") and len(r["patient"]) == 13 for r in rows)
    assert all(r["id"].startswith(r["patient"] + "/") for r in rows)
    raw_keys = [line.split(",")[0] for line in (run / "data" / "data_information.csv").read_text().splitlines()[1:]]
    text = "".join((run / name).read_text() for name in ("report.json", "report.html", "folds.json"))
    for key in {f"{cls}/{case}" for cls in ("NORMAL", "DRUSEN", "CNV") for case in raw_keys}:
        assert f'"{key}"' not in text
    audit = json.loads((run / "audit.json").read_text())
    assert all(p["patient"].startswith("P") for p in audit["patients"])


def test_export_then_predict_on_unseen_real_scans(tiny_run, tmp_path, shared_fixtures):
    export = tmp_path / "export"
    assert main(["export", str(tiny_run), "--format", "onnx,torchscript,bundle", "--out", str(export)]) == 0
    parity = json.loads((export / "parity.json").read_text())
    assert parity["passed"] and {c["artefact"] for c in parity["checks"]} >= {"model.onnx", "model.ts"}
    assert all(c["passed"] and c["inputs"] == "real" for c in parity["checks"])
    assert (export / "bundle" / "configs" / "metadata.json").exists() and (export / "MODEL_CARD.md").exists()
    scans = sorted((shared_fixtures / "oct2017-real").glob("*/*.jpeg"))[:4]
    out = tmp_path / "preds.csv"
    assert main(["predict", str(export), *map(str, scans), "--out", str(out)]) == 0
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert [r["path"] for r in rows] == [str(s) for s in scans]
    for row in rows:
        probs = [float(row[f"prob_{c}"]) for c in ("NORMAL", "DRUSEN", "CNV")]
        assert abs(sum(probs) - 1) < 1e-4 and row["class"] in ("NORMAL", "DRUSEN", "CNV")
