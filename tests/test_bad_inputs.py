"""The bad-input corpus: every case is generated here and must fail clearly through the user-facing
commands (exit status != 0, a message naming the file, line or key and why, never a bare traceback)."""

from __future__ import annotations

import csv
import pickle
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

import facekd.cli
import medkd.cli
from facekd.pts_files import write_pts
from medkd.synth import write_synthetic_oct
from tests.medkd.tiny import write_tiny_recipe


@pytest.fixture(scope="module")
def clean_neh(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus") / "neh"
    write_synthetic_oct(root, 6, seed=3, image_size=(160, 112), scans_per_eye=(2, 3))
    return root


@pytest.fixture
def neh(clean_neh, tmp_path) -> Path:
    return Path(shutil.copytree(clean_neh, tmp_path / "neh"))


def first_image(root: Path) -> Path:
    return sorted(root.glob("*/*/*/*.jpg"))[0]


def run_cli(module, argv, capsys) -> tuple[int, str]:
    code = module.main([str(a) for a in argv])
    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert "Traceback" not in output
    return code, output


def audit_neh(root, capsys):
    return run_cli(medkd.cli, ["audit", root, "--format", "neh", "--no-near-duplicates"], capsys)


# ----------------------------------------------------------------- images


def test_truncated_jpeg(neh, capsys):
    image = first_image(neh)
    image.write_bytes(image.read_bytes()[:-200])
    code, out = audit_neh(neh, capsys)
    assert code == 1 and image.name in out and "truncated JPEG" in out


def test_zero_byte_jpeg(neh, capsys):
    image = first_image(neh)
    image.write_bytes(b"")
    code, out = audit_neh(neh, capsys)
    assert code == 1 and image.name in out and "empty file" in out


def face_folder(tmp_path: Path, n: int = 3, suffix: str = ".png") -> Path:
    root = tmp_path / "faces"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        image = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
        cv2.imwrite(str(root / f"face{i}{suffix}"), image)
        points = np.stack([np.linspace(10, 50, 68), np.linspace(12, 52, 68)], 1)
        write_pts(root / f"face{i}.pts", points)
    return root


def audit_faces(root, capsys):
    return run_cli(facekd.cli, ["audit", root, "--format", "folder"], capsys)


def test_truncated_png_face(tmp_path, capsys):
    root = face_folder(tmp_path)
    image = root / "face1.png"
    image.write_bytes(image.read_bytes()[: len(image.read_bytes()) // 2])
    code, out = audit_faces(root, capsys)
    assert code == 1 and "face1.png" in out and "truncated PNG" in out


def test_truncated_tiff(tmp_path, capsys):
    root = face_folder(tmp_path, suffix=".tif")
    image = root / "face0.tif"
    image.write_bytes(image.read_bytes()[: len(image.read_bytes()) // 2])
    code, out = audit_faces(root, capsys)
    assert code == 1 and "face0.tif" in out


def test_image_with_two_channels(neh, capsys):
    image = first_image(neh)
    Image.fromarray(np.zeros((112, 160, 2), np.uint8), mode="LA").save(image.with_suffix(".png"))
    image.with_suffix(".png").replace(image)  # a PNG with grey+alpha under the .jpg name the CSV lists
    code, out = audit_neh(neh, capsys)
    assert code == 1 and image.name in out and "2 channels" in out


def test_sixteen_bit_image(tmp_path, capsys):
    root = face_folder(tmp_path)
    cv2.imwrite(str(root / "face2.png"), np.full((64, 64), 40000, np.uint16))
    code, out = audit_faces(root, capsys)
    assert code == 1 and "face2.png" in out and "bit depth" in out


# ----------------------------------------------------------------- tables and folders


def rewrite_csv(root: Path, transform) -> None:
    path = root / "data_information.csv"
    with path.open() as f:
        rows = list(csv.DictReader(f))
    rows, fields = transform(rows)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def test_csv_missing_a_column(neh, capsys):
    rewrite_csv(neh, lambda rows: ([{k: v for k, v in r.items() if k != "Eye"} for r in rows],
                                   [k for k in rows[0] if k != "Eye"]))
    code, out = audit_neh(neh, capsys)
    assert code != 0 and "data_information.csv" in out and "Eye" in out


def test_duplicated_rows_in_a_manifest(tmp_path, capsys):
    root = tmp_path / "own"
    root.mkdir()
    for i in range(2):
        cv2.imwrite(str(root / f"b{i}.png"), np.zeros((32, 32), np.uint8))
    (root / "manifest.csv").write_text("path,label,patient\nb0.png,NORMAL,p1\nb1.png,CNV,p2\nb0.png,NORMAL,p1\n")
    code, out = run_cli(medkd.cli, ["audit", root, "--format", "manifest", "--no-near-duplicates"], capsys)
    assert code != 0 and "manifest.csv:4" in out


def test_manifest_path_escaping_the_root(tmp_path, capsys):
    root = tmp_path / "own"
    root.mkdir()
    (root / "manifest.csv").write_text("path,label,patient\n../secret.png,NORMAL,p1\n")
    code, out = run_cli(medkd.cli, ["audit", root, "--format", "manifest"], capsys)
    assert code != 0 and "manifest.csv:2" in out


def test_empty_class_folder(tmp_path, capsys):
    root = tmp_path / "oct2017"
    for cls in ("CNV", "DME", "DRUSEN", "NORMAL"):
        (root / "train" / cls).mkdir(parents=True)
        if cls != "DME":
            cv2.imwrite(str(root / "train" / cls / f"{cls}-1{len(cls)}-1.jpeg"), np.zeros((40, 40), np.uint8))
    code, out = run_cli(medkd.cli, ["audit", root, "--format", "oct2017", "--no-near-duplicates"], capsys)
    assert code != 0 and "DME" in out


def test_case_mismatched_csv_paths_are_reported(neh, capsys):
    rewrite_csv(neh, lambda rows: ([{**r, "Directory": r["Directory"].lower()} if i == 0 else r
                                    for i, r in enumerate(rows)], list(rows[0])))
    code, out = audit_neh(neh, capsys)
    assert "case" in out.lower() and "data_information.csv" in out


def test_class_with_fewer_patients_than_folds(neh, tmp_path, capsys):
    recipe = write_tiny_recipe(tmp_path, data={"format": "neh"}, cv={"folds": 5})
    code, out = run_cli(medkd.cli, ["run", recipe, "--data-root", neh, "--out", tmp_path / "run"], capsys)
    assert code == 2 and "class 'CNV' has 2 patient(s), fewer than 5 folds" in out
    assert not (tmp_path / "run").exists(), "a run that could not start must leave no folder behind"


# ----------------------------------------------------------------- landmark files


def test_pts_with_the_wrong_point_count(tmp_path, capsys):
    root = face_folder(tmp_path)
    write_pts(root / "face0.pts", np.zeros((67, 2)) + 20)
    code, out = audit_faces(root, capsys)
    assert code == 1 and "face0.pts" in out and "67" in out


def test_nan_in_pts(tmp_path, capsys):
    root = face_folder(tmp_path)
    lines = (root / "face1.pts").read_text().splitlines()
    lines[5] = "nan 12.0"
    (root / "face1.pts").write_text("\n".join(lines) + "\n")
    code, out = audit_faces(root, capsys)
    assert code == 1 and "face1.pts:6" in out


def test_text_in_pts(tmp_path, capsys):
    root = face_folder(tmp_path)
    lines = (root / "face2.pts").read_text().splitlines()
    lines[10] = "twelve 14.0"
    (root / "face2.pts").write_text("\n".join(lines) + "\n")
    code, out = audit_faces(root, capsys)
    assert code == 1 and "face2.pts:11" in out


def test_wflw_line_with_the_wrong_field_count(tmp_path, capsys):
    root = tmp_path / "WFLW"
    images = root / "WFLW_images" / "0--Parade"
    images.mkdir(parents=True)
    cv2.imwrite(str(images / "a.jpg"), np.zeros((100, 100, 3), np.uint8))
    listing = root / "WFLW_annotations" / "list_98pt_rect_attr_train_test"
    listing.mkdir(parents=True)
    good = " ".join(["50"] * 196 + ["10", "10", "90", "90"] + ["0"] * 6 + ["0--Parade/a.jpg"])
    bad = " ".join(["50"] * 195 + ["10", "10", "90", "90"] + ["0"] * 6 + ["0--Parade/a.jpg"])
    (listing / "list_98pt_rect_attr_train.txt").write_text(good + "\n" + bad + "\n")
    (listing / "list_98pt_rect_attr_test.txt").write_text(good + "\n")
    code, out = run_cli(facekd.cli, ["audit", root, "--format", "wflw"], capsys)
    assert code == 1 and "list_98pt_rect_attr_train.txt:2" in out


def test_landmarks_far_outside_the_image(tmp_path, capsys):
    root = face_folder(tmp_path)
    write_pts(root / "face0.pts", np.stack([np.linspace(500, 900, 68), np.linspace(12, 52, 68)], 1))
    code, out = audit_faces(root, capsys)
    assert code == 1 and "face0.pts" in out and "outside" in out


def test_landmarks_collapsed_to_one_place(tmp_path, capsys):
    root = face_folder(tmp_path)
    write_pts(root / "face1.pts", np.full((68, 2), 30.0))
    code, out = audit_faces(root, capsys)
    assert code == 1 and "face1.pts" in out and "collapsed annotation" in out and "bad_landmarks" in out


def test_wflw_lists_without_a_face(tmp_path, capsys):
    listing = tmp_path / "WFLW" / "WFLW_annotations" / "list_98pt_rect_attr_train_test"
    listing.mkdir(parents=True)
    for name in ("list_98pt_rect_attr_train.txt", "list_98pt_rect_attr_test.txt"):
        (listing / name).write_text("")
    code, out = run_cli(facekd.cli, ["audit", tmp_path / "WFLW", "--format", "wflw"], capsys)
    assert code == 1 and "no_faces" in out and "no annotated face found for format 'wflw'" in out


# ----------------------------------------------------------------- recipes, output, checkpoints


def test_unknown_recipe_key(tmp_path, capsys):
    recipe = write_tiny_recipe(tmp_path, student={"temprature": 2.0})
    code, out = run_cli(medkd.cli, ["run", recipe, "--out", tmp_path / "run"], capsys)
    assert code == 2 and "student.temprature: unknown key (did you mean 'temperature'?)" in out
    assert not (tmp_path / "run").exists(), "nothing may be written for an invalid recipe"


def test_negative_temperature_and_learning_rate(tmp_path, capsys):
    recipe = write_tiny_recipe(tmp_path)
    code, out = run_cli(medkd.cli, ["run", recipe, "--out", tmp_path / "run", "--set", "student.temperature=-1",
                                    "--set", "teacher.train.lr=-0.001"], capsys)
    assert code == 2 and "student.temperature: must be > 0, got -1" in out
    assert "teacher.train.lr: must be > 0, got -0.001" in out


def test_seeds_outside_what_numpy_accepts(tmp_path, capsys):
    recipe = write_tiny_recipe(tmp_path)
    code, out = run_cli(medkd.cli, ["run", recipe, "--out", tmp_path / "run", "--set", "seed=-1",
                                    "--set", "cv.seed=4294967296"], capsys)
    assert code == 2 and "seed: must be >= 0, got -1" in out and "cv.seed: must be < 4294967296" in out


def test_face_recipe_errors_name_the_key(tmp_path, capsys):
    recipe = tmp_path / "face.yaml"
    recipe.write_text("student:\n  kd:\n    boundary_fraction: 0\n  epochs: 3\n")
    code, out = run_cli(facekd.cli, ["run", recipe, "--out", tmp_path / "run"], capsys)
    assert code == 2 and "student.kd.boundary_fraction: must be > 0, got 0" in out
    assert "student.epochs: unknown key" in out


def test_output_directory_that_is_not_writable(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    recipe = write_tiny_recipe(tmp_path)
    code, out = run_cli(medkd.cli, ["run", recipe, "--out", blocker / "run"], capsys)
    assert code == 2 and "not writable" in out and "a_file" in out


def trained_teacher(tmp_path) -> Path:
    import timm

    from kdcore.checkpoint import save_weights

    model = timm.create_model("test_efficientnet", num_classes=3, in_chans=1)
    path = tmp_path / "teacher" / "model.safetensors"
    save_weights(path, model.state_dict(), {"arch": "test_efficientnet", "role": "teacher", "fold": 1,
                                            "manifest": "abc", "num_outputs": 3, "in_chans": 1})
    return path


@pytest.mark.parametrize("wrong", [{"fold": 0}, {"arch": "test_resnet"}])
def test_teacher_checkpoint_from_another_fold_or_architecture(tmp_path, wrong):
    from kdcore.errors import CheckpointError
    from kdcore.teacher import FrozenTeacher
    from kdcore.models import build_model

    path = trained_teacher(tmp_path)
    expected = {"arch": "test_efficientnet", "role": "teacher", "fold": 1, "manifest": "abc", **wrong}
    with pytest.raises(CheckpointError, match=r"model\.safetensors: belongs to another model or fold"):
        FrozenTeacher.from_weights(path, build_model, expected)


def test_checkpoint_with_code_is_refused_not_run(tmp_path):
    from kdcore.checkpoint import load_checkpoint
    from kdcore.errors import CheckpointError

    marker = tmp_path / "code_ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    evil = tmp_path / "last.pt"
    evil.write_bytes(pickle.dumps({"model": Payload()}))
    with pytest.raises(CheckpointError, match="last.pt: refused to load"):
        load_checkpoint(evil)
    assert not marker.exists()


def test_missing_data_root_leaves_no_run_folder(tmp_path, capsys):
    recipe = write_tiny_recipe(tmp_path, data={"format": "oct2017"})
    code, out = run_cli(medkd.cli, ["run", recipe, "--data-root", tmp_path / "nowhere", "--out", tmp_path / "run"],
                        capsys)
    assert code == 2 and "nowhere" in out and "does not exist" in out
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("setting, message", [
    ("student.model=efficientnet_b99", "student.model: 'efficientnet_b99' is not a timm model (did you mean"),
    ("teacher.model=test_resnet.no_such_tag", "teacher.model: 'test_resnet.no_such_tag': timm has no pretrained tag"),
    ("teacher.weights=/nowhere/teacher.safetensors", "teacher.weights: /nowhere/teacher.safetensors does not exist"),
])
def test_model_choices_are_checked_before_the_run_folder_is_made(tmp_path, capsys, setting, message):
    recipe = write_tiny_recipe(tmp_path)
    code, out = run_cli(medkd.cli, ["run", recipe, "--out", tmp_path / "run", "--set", setting], capsys)
    assert code == 2 and message in out
    assert not (tmp_path / "run").exists()


def test_unreachable_pretrained_weights_stop_the_run_before_it_starts(tmp_path, capsys, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(repo_id, filename, **kwargs):
        raise LocalEntryNotFoundError(f"{repo_id}/{filename} is not in the cache and the hub is unreachable")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    recipe = write_tiny_recipe(tmp_path)
    code, out = run_cli(medkd.cli, ["run", recipe, "--out", tmp_path / "run", "--set", "teacher.pretrained=true"],
                        capsys)
    assert code == 2 and "teacher.pretrained: cannot fetch timm's pretrained weights for 'test_resnet'" in out
    assert "set teacher.weights to a local file" in out
    assert not (tmp_path / "run").exists()


def test_resume_without_a_run(tmp_path, capsys):
    recipe = write_tiny_recipe(tmp_path)
    code, out = run_cli(medkd.cli, ["run", recipe, "--out", tmp_path / "nothing", "--resume"], capsys)
    assert code == 2 and "no run to continue" in out


# ----------------------------------------------------------------- OCT volumes (DICOM OPT, vendor exports)


def volume_folder(tmp_path: Path) -> Path:
    from tests.medkd.dicom_opt import real_or_synthetic_bscans, write_opt

    root = tmp_path / "volumes"
    write_opt(root / "a.dcm", real_or_synthetic_bscans(3, start=0), patient_id="MRN-0001")
    write_opt(root / "b.dcm", real_or_synthetic_bscans(3, start=8), patient_id="MRN-0002")
    data = (root / "b.dcm").read_bytes()
    (root / "b.dcm").write_bytes(data[: len(data) - 1000])
    (root / "c.oct").write_bytes(b"\0" * 100)
    (root / "labels.csv").write_text("file,label\na.dcm,CNV\nb.dcm,NORMAL\n")
    return root


def test_broken_and_unsupported_volumes_are_named_by_the_audit(tmp_path, capsys):
    root = volume_folder(tmp_path)
    code, out = run_cli(medkd.cli, ["audit", root, "--format", "volumes", "--no-near-duplicates"], capsys)
    assert code == 1 and "b.dcm: truncated pixel data" in out and "c.oct: not a supported volume format" in out
    assert "MRN-" not in out


@pytest.mark.parametrize("setting, message", [
    (None, "b.dcm: truncated pixel data"),
    ("data.bscans=middle", "data.bscans: unknown B-scan selection 'middle'"),
])
def test_a_volume_run_with_bad_files_or_selection_never_starts(tmp_path, capsys, setting, message):
    root = volume_folder(tmp_path)
    recipe = write_tiny_recipe(tmp_path, data={"format": "volumes"})
    extra = ["--set", setting] if setting else []
    code, out = run_cli(medkd.cli, ["run", recipe, "--data-root", root, "--out", tmp_path / "run", *extra], capsys)
    assert code == 2 and message in out and "MRN-" not in out
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------- reliability issue 17


@pytest.mark.parametrize("folds", ["1-0", ",", " "])
def test_empty_or_reversed_fold_list_is_refused(tmp_path, capsys, folds):
    recipe = write_tiny_recipe(tmp_path)
    code, out = run_cli(medkd.cli, ["run", recipe, "--out", tmp_path / "run", "--folds", folds], capsys)
    assert code == 2 and "--folds" in out and not (tmp_path / "run").exists()


def test_one_class_manifest_is_a_blocking_finding(neh, capsys):
    rows = [r for r in csv.reader((neh / "data_information.csv").open())]
    manifest = neh / "manifest.csv"
    with manifest.open("w", newline="") as f:
        csv.writer(f).writerows([["path", "label", "patient"]] + [[r[3], "CNV", f"{r[1]}/{r[0]}"] for r in rows[1:]])
    code, out = run_cli(medkd.cli, ["audit", neh, "--format", "manifest", "--no-near-duplicates"], capsys)
    assert code == 1 and "too_few_classes" in out and "images of 1 class(es) only (CNV)" in out


def test_one_class_recipe_is_refused(tmp_path, capsys):
    recipe = write_tiny_recipe(tmp_path, data={"classes": ["CNV"]})
    code, out = run_cli(medkd.cli, ["run", recipe, "--out", tmp_path / "run"], capsys)
    assert code == 2 and "data.classes: list should have at least 2 items" in out


def test_yaml_merge_key_is_standard_yaml(tmp_path, capsys):
    recipe = write_tiny_recipe(tmp_path)
    text = recipe.read_text().replace("student:\n", "student:\n  <<: {drop_path: 0.125}\n", 1)
    recipe.write_text(text)
    from kdcore.config import load_recipe
    from medkd.config import OCTRecipe

    assert load_recipe(OCTRecipe, recipe).student.drop_path == 0.125


def test_yaml_complex_key_is_named(tmp_path, capsys):
    recipe = write_tiny_recipe(tmp_path)
    recipe.write_text(recipe.read_text() + "? [a, b]\n: 1\n")
    code, out = run_cli(medkd.cli, ["run", recipe, "--out", tmp_path / "run"], capsys)
    assert code == 2 and "a key must be a plain name, got a list" in out and "tiny_oct.yaml:" in out


@pytest.mark.parametrize("content", ["key: [unclosed\n", "- just\n- a list\n"])
def test_corrupt_recorded_config_then_resume(tmp_path, capsys, content):
    recipe = write_tiny_recipe(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text(content)
    code, out = run_cli(medkd.cli, ["run", recipe, "--out", tmp_path / "run", "--resume"], capsys)
    assert code == 2 and "config.yaml: the run's recorded recipe is not" in out


def test_upper_case_pts_belongs_to_its_image(tmp_path, capsys):
    root = face_folder(tmp_path)
    (root / "face0.pts").rename(root / "face0.PTS")
    code, out = audit_faces(root, capsys)
    assert "face0" not in out.split("problem(s)")[0] or "no image beside" not in out
    assert "has no .pts file beside it" not in out and "no image beside this .pts" not in out


def test_latin1_file_name_in_a_log_line_is_kept(tmp_path):
    import logging

    from kdcore.logs import setup_logging

    setup_logging(logfile=tmp_path / "run.log")
    name = b"caf\xe9.jpg".decode("utf-8", "surrogateescape")  # what os.listdir gives for a Latin-1 name
    logging.getLogger("kdcore.test").warning("cannot read %s", name)
    for handler in logging.getLogger().handlers:
        handler.flush()
    assert "cannot read caf\\udce9.jpg" in (tmp_path / "run.log").read_text(encoding="utf-8")


def _hold_lock(folder: Path):
    import subprocess
    import sys
    import time

    code = ("import sys, time; from kdcore.run_folder import lock_run_folder; lock_run_folder(sys.argv[1]); "
            "print('locked', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_second_run_into_a_busy_folder_is_refused_and_a_dead_holder_is_not_in_the_way(tmp_path, capsys):
    import signal

    from kdcore.run_folder import LOCK_NAME, lock_run_folder, release_run_folder

    recipe = write_tiny_recipe(tmp_path)
    out = tmp_path / "run"
    out.mkdir()
    holder = _hold_lock(out)
    try:
        code, message = run_cli(medkd.cli, ["run", recipe, "--out", out], capsys)
        assert code == 2 and "another run is writing this folder (process" in message
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME], "the refused run wrote nothing"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (out / LOCK_NAME).exists()  # a killed run's stale lock file ...
    lock_run_folder(out)  # ... does not stop the next run
    release_run_folder(out)
    assert not (out / LOCK_NAME).exists()


def test_failed_run_removes_only_what_it_made(tmp_path, capsys):
    recipe = write_tiny_recipe(tmp_path, data={"format": "oct2017"})
    mine, empty = tmp_path / "mine", tmp_path / "empty"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's")
    empty.mkdir()
    for out in (mine, empty):
        code, _ = run_cli(medkd.cli, ["run", recipe, "--data-root", tmp_path / "nowhere", "--out", out], capsys)
        assert code == 2
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    assert empty.is_dir() and not any(empty.iterdir())


def test_tiny_cofw_mat_file_is_one_line(tmp_path, capsys):
    root = tmp_path / "cofw"
    root.mkdir()
    for name in ("COFW_train_color.mat", "COFW_test_color.mat"):
        (root / name).write_bytes(b"MATLAB 5.0")
    code, out = run_cli(facekd.cli, ["audit", root, "--format", "cofw"], capsys)
    assert code == 1 and "COFW_train_color.mat: cannot read this MATLAB file" in out


def test_latin1_byte_in_a_csv_names_its_line(neh, capsys):
    csv_path = neh / "data_information.csv"
    lines = csv_path.read_bytes().split(b"\n")
    lines[7] += b"\xe9"
    csv_path.write_bytes(b"\n".join(lines))
    code, out = audit_neh(neh, capsys)
    assert code == 1 and "data_information.csv:8: byte 0xe9 is not UTF-8" in out


def test_manifest_symlink_leading_outside_the_root(neh, tmp_path, capsys):
    outside = tmp_path / "elsewhere.jpg"
    shutil.copy(first_image(neh), outside)
    (neh / "link.jpg").symlink_to(outside)
    rows = list(csv.reader((neh / "data_information.csv").open()))[1:]
    with (neh / "manifest.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["path", "label", "patient"], ["link.jpg", "CNV", "p0"]]
                                + [[r[3], r[2], f"{r[1]}/{r[0]}"] for r in rows])
    code, out = run_cli(medkd.cli, ["audit", neh, "--format", "manifest", "--no-near-duplicates"], capsys)
    assert code == 1 and "'link.jpg' is a symbolic link leading outside the data root" in out


def test_wflw_list_path_leading_outside_the_images(tmp_path, capsys):
    root = tmp_path / "WFLW"
    (root / "WFLW_images").mkdir(parents=True)
    (root / "WFLW_annotations" / "list_98pt_rect_attr_train_test").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "secret.jpg"), np.zeros((64, 64, 3), np.uint8))
    points = " ".join(f"{10 + i % 40} {12 + i % 37}" for i in range(98))
    line = f"{points} 5 5 60 60 0 0 0 0 0 0 ../../secret.jpg\n"
    lists = root / "WFLW_annotations" / "list_98pt_rect_attr_train_test"
    for part in ("train", "test"):
        (lists / f"list_98pt_rect_attr_{part}.txt").write_text(line)
    code, out = run_cli(facekd.cli, ["audit", root, "--format", "wflw"], capsys)
    assert code == 1 and "image path '../../secret.jpg' leads outside WFLW_images/" in out


@pytest.mark.parametrize("setting, message", [
    ("student.kd_loss_params.temprature=2", "student.kd_loss_params.temprature: unknown argument of loss 'kd'"),
    ("student.kd_loss_params.temperature=-2", "student.kd_loss_params.temperature: temperature must be a finite"),
    ("student.kd_loss_params.gamma=1", "student.kd_loss_params.gamma: unknown argument of loss 'kd'"),
])
def test_wrong_kd_loss_params_stop_before_anything_is_read(tmp_path, capsys, setting, message):
    recipe = write_tiny_recipe(tmp_path)
    code, out = run_cli(medkd.cli, ["run", recipe, "--out", tmp_path / "run", "--set", setting], capsys)
    assert code == 2 and message in out
    assert not (tmp_path / "run").exists(), "nothing may be written for an invalid objective"


def test_kd_loss_params_temperature_is_accepted(tmp_path, capsys):
    import yaml

    recipe = write_tiny_recipe(tmp_path)
    code, out = run_cli(medkd.cli, ["config", recipe, "--set", "student.kd_loss_params.temperature=2"], capsys)
    student = yaml.safe_load(out)["student"]
    assert code == 0 and student["temperature"] == 2.0 and student["kd_loss_params"] == {}
