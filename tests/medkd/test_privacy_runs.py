"""NEH-layout data with distinctive case numbers: the folds depend on the data and seed only (fold jobs merge, a
second run gives the same files), and nothing a run, split, audit, report or export writes shows a raw case
number or a folder of this machine (only config.yaml and environment.json may say where the data is)."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest

from medkd.cli import main
from medkd.data import load_oct_dataset
from medkd.privacy import patient_hasher, pseudonymise
from medkd.synth import write_synthetic_oct
from tests.medkd.tiny import write_tiny_recipe

CLASSES = ("NORMAL", "DRUSEN", "CNV")


def medkd(*argv) -> int:
    return main([str(a) for a in argv])
CASE = re.compile(rb"(?<![0-9.])739[0-9]{2}(?![0-9])")
MAY_SAY_WHERE = {"config.yaml", "environment.json"}


def distinctive_neh(root: Path) -> list[str]:
    """A synthetic NEH tree whose case numbers (739xy) cannot be confused with other numbers in the outputs."""
    write_synthetic_oct(root, 12, seed=3, image_size=(160, 112), scans_per_eye=(1, 2))
    csv_path = root / "data_information.csv"
    rows = list(csv.reader(csv_path.open()))
    new_case = {}
    for cls in CLASSES:
        for case in sorted((root / cls).iterdir()):
            new_case[(cls, case.name)] = str(73900 + 10 * int(case.name) + CLASSES.index(cls))
            case.rename(case.parent / new_case[(cls, case.name)])
    out = [rows[0]]
    for patient, cls, label, directory, eye in rows[1:]:
        parts = directory.split("/")
        parts[1] = new_case[(cls, patient)]
        out.append([parts[1], cls, label, "/".join(parts), eye])
    with csv_path.open("w", newline="") as f:
        csv.writer(f).writerows(out)
    return sorted(new_case.values())


@pytest.fixture(scope="module")
def neh_runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("privacy")
    data = folder / "neh_data_root"
    distinctive_neh(data)
    bad = sorted(data.glob("CNV/*/*/*.jpg"))[0]  # one truncated B-scan, excluded as the recipe allows
    bad.write_bytes(bad.read_bytes()[:300])
    recipe = write_tiny_recipe(folder, data={"format": "neh", "on_bad_image": "exclude", "near_duplicates": False},
                               # one validation patient a fold: with the tiny recipe's 0.34 of 6 training
                               # patients, the exact share (2) can take a class's last training patient
                               cv={"folds": 2, "val_fraction": 0.2},
                               teacher={"model": "resnet10t", "train": {"epochs": 2, "swa": {"enabled": False}}},
                               student={"train": {"epochs": 1}}, baseline={"enabled": False},
                               report={"bootstrap": 20, "latency_runs": 1})
    common = ["--data-root", data]
    runs = {name: folder / name for name in ("again0", "fold0", "fold1")}
    assert medkd(*["run", recipe, *common, "--out", runs["again0"], "--folds", "0"]) == 0
    assert medkd(*["run", recipe, *common, "--out", runs["fold0"], "--folds", "0"]) == 0
    assert medkd(*["run", recipe, *common, "--out", runs["fold1"], "--folds", "1"]) == 0
    assert medkd(*["split", recipe, *common, "--out", folder / "split" / "folds.json"]) == 0
    assert medkd(*["audit", data, "--format", "neh", "--no-near-duplicates", "--out", folder / "audit" / "a.json"]) == 1
    assert medkd(*["report", runs["fold0"], "--merge", runs["fold1"], "--bootstrap", "20"]) == 0
    assert medkd(*["export", runs["fold0"], "--fold", "0", "--format", "onnx,bundle", "--out", folder / "export"]) == 0
    return folder, data, runs


def test_fold_jobs_and_a_second_run_give_the_same_folds_and_predictions(neh_runs):
    folder, _, runs = neh_runs
    manifest = (runs["fold0"] / "folds.json").read_bytes()
    assert (runs["again0"] / "folds.json").read_bytes() == manifest
    assert (runs["fold1"] / "folds.json").read_bytes() == manifest
    split = json.loads((folder / "split" / "folds.json").read_text())  # no integrity gate: the bad scan is in
    for ours, run_fold in zip(split["folds"], json.loads(manifest)["folds"]):  # same patients, same folds
        assert set(run_fold["test"]) <= set(ours["test"]) and len(set(ours["test"]) - set(run_fold["test"])) <= 1
    for model in ("teacher", "student"):
        again = runs["again0"] / "folds" / "fold_0" / model / "predictions.csv"
        assert (runs["fold0"] / "folds" / "fold_0" / model / "predictions.csv").read_bytes() == again.read_bytes()
    merged = json.loads((runs["fold0"] / "report.json").read_text())
    assert [f["fold"] for f in merged["models"]["student"]["folds"]] == [0, 1]


def test_no_output_shows_a_case_number_or_a_machine_path(neh_runs):
    folder, data, _ = neh_runs
    machine_paths = {str(folder).encode(), str(folder.resolve()).encode(), b"neh_data_root"}
    checked, leaks = 0, []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and data not in p.parents and p.parent != folder):
        content = path.read_bytes()
        checked += 1
        if CASE.search(content):
            leaks.append(f"{path.relative_to(folder)}: case number {CASE.search(content).group().decode()}")
        if path.name not in MAY_SAY_WHERE and any(p in content for p in machine_paths):
            leaks.append(f"{path.relative_to(folder)}: machine path")
    assert checked > 40 and not leaks, leaks


def test_excluded_image_is_listed_by_its_pseudonymous_id(neh_runs):
    _, _, runs = neh_runs
    audit = json.loads((runs["fold0"] / "audit.json").read_text())
    assert len(audit["excluded"]) == 1 and re.fullmatch(r"P[0-9a-f]{12}/O[DS]/\d+_CNV\.jpg", audit["excluded"][0])
    assert audit["root"] == "<data root>"
    items = json.loads((runs["fold0"] / "dataset.json").read_text())["items"]
    assert all("path" not in item for item in items)


def test_same_file_name_in_two_folders_of_one_patient_keeps_two_ids(tmp_path):
    root = tmp_path / "data"
    for visit in ("v1", "v2"):
        (root / "p7" / visit).mkdir(parents=True)
        shutil.copy(Path(__file__).parents[2] / "medkd" / "__init__.py", root / "p7" / visit / "scan1.jpg")
    (root / "manifest.csv").write_text("path,label,patient\np7/v1/scan1.jpg,CNV,p7\np7/v2/scan1.jpg,CNV,p7\n")
    dataset = pseudonymise(load_oct_dataset(root, "manifest"), patient_hasher(b"key"))
    ids = [r.image_id for r in dataset.records]
    assert len(set(ids)) == 2 and all(i.startswith(dataset.records[0].patient + "/v") for i in ids)


def test_resume_with_a_changed_student_retrains_only_the_student(neh_runs, tmp_path):
    folder, data, runs = neh_runs
    run = Path(shutil.copytree(runs["again0"], tmp_path / "run"))
    teacher = (run / "folds" / "fold_0" / "teacher" / "predictions.csv").read_bytes()
    argv = ["run", folder / "tiny_oct.yaml", "--data-root", data, "--out", run, "--folds", "0", "--resume",
            "--set", "student.temperature=2"]
    assert medkd(*argv) == 2  # refused, naming the student folders to delete
    shutil.rmtree(run / "folds" / "fold_0" / "student")
    assert medkd(*argv) == 0
    assert (run / "folds" / "fold_0" / "teacher" / "predictions.csv").read_bytes() == teacher
    assert (run / "folds" / "fold_0" / "student" / "done.json").is_file()
    assert "temperature: 2.0" in (run / "config.yaml").read_text()


@pytest.mark.parametrize("damage", ["truncate", "duplicate"])
def test_report_refuses_predictions_that_do_not_match_the_fold(neh_runs, tmp_path, capsys, damage):
    _, _, runs = neh_runs
    run = Path(shutil.copytree(runs["again0"], tmp_path / "run"))
    path = run / "folds" / "fold_0" / "student" / "predictions.csv"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:3] if damage == "truncate" else lines + lines[1:2]))
    assert medkd("report", run, "--bootstrap", "10") == 2
    err = capsys.readouterr().err
    assert "predictions.csv: changed since fold 0 of student finished" in err and "re-run the fold" in err
    (run / "folds" / "fold_0" / "student" / "done.json").write_text(  # a run from before the file was recorded
        json.dumps({k: v for k, v in json.loads((run / "folds" / "fold_0" / "student" / "done.json").read_text())
                    .items() if k != "predictions"}))
    assert medkd("report", run, "--bootstrap", "10") == 2
    err = capsys.readouterr().err
    assert ("prediction rows for the" in err) if damage == "truncate" else ("predicted again (first at line" in err)
