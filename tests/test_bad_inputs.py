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
from facekd.io import write_pts
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
    from medkd.fold_training import build_classifier

    path = trained_teacher(tmp_path)
    expected = {"arch": "test_efficientnet", "role": "teacher", "fold": 1, "manifest": "abc", **wrong}
    with pytest.raises(CheckpointError, match=r"model\.safetensors: belongs to another model or fold"):
        FrozenTeacher.from_weights(path, build_classifier, expected)


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
