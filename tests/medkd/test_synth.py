"""Synthetic OCT generator: NEH layout, determinism, label structure, OCT-like appearance, knobs and speed."""

from __future__ import annotations

import csv
import time
from collections import Counter

import cv2
import numpy as np
import pytest

from kdcore.errors import ConfigError
from kdcore.images import read_image
from medkd.data import load_neh
from medkd.synth import render_bscan, write_synthetic_oct
from medkd.synth.anatomy import sample_anatomy

SMALL = dict(image_size=(128, 96), scans_per_eye=(2, 4))


def read_rows(summary):
    with summary.csv_path.open() as f:
        return list(csv.DictReader(f))


def files_of(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files(tmp_path):
    a = write_synthetic_oct(tmp_path / "a", 4, seed=11, **SMALL)
    b = write_synthetic_oct(tmp_path / "b", 4, seed=11, **SMALL)
    c = write_synthetic_oct(tmp_path / "c", 4, seed=12, **SMALL)
    assert files_of(a.root) == files_of(b.root)
    assert files_of(a.root) != files_of(c.root)


def test_layout_and_csv_follow_neh(tmp_path):
    summary = write_synthetic_oct(tmp_path, 7, seed=1, **SMALL)
    rows = read_rows(summary)
    assert list(rows[0]) == ["Patient ID", "Class", "Label", "Directory", "Eye"]
    for row in rows:
        parts = row["Directory"].split("/")
        assert parts[0] == row["Class"] and parts[1] == row["Patient ID"] and parts[2] == row["Eye"]
        assert row["Eye"] in ("OD", "OS") and (tmp_path / row["Directory"]).is_file()
        number, file_label = parts[3][:-4].split("_")
        assert len(number) == 3 and file_label.upper() == row["Label"]
    # 7 patients round-robin over 3 classes: case numbers restart in each class folder
    cases = {c: sorted({int(r["Patient ID"]) for r in rows if r["Class"] == c}) for c in ("NORMAL", "DRUSEN", "CNV")}
    assert cases == {"NORMAL": [1, 2, 3], "DRUSEN": [1, 2], "CNV": [1, 2]}
    assert summary.n_images == len(rows) and summary.patients_per_class == {"NORMAL": 3, "DRUSEN": 2, "CNV": 2}
    for patient in {(r["Class"], r["Patient ID"]) for r in rows}:
        per_eye = Counter(r["Eye"] for r in rows if (r["Class"], r["Patient ID"]) == patient)
        assert 1 <= len(per_eye) <= 2 and all(2 <= n <= 4 for n in per_eye.values())


def test_diseased_patients_have_lesion_free_scans_but_keep_their_disease(tmp_path):
    summary = write_synthetic_oct(tmp_path, 12, seed=2, normal_fraction=0.4, **SMALL)
    rows = read_rows(summary)
    diseased = [r for r in rows if r["Class"] != "NORMAL"]
    assert any(r["Label"] == "NORMAL" for r in diseased)
    assert all(r["Label"] == "NORMAL" for r in rows if r["Class"] == "NORMAL")
    for patient in {(r["Class"], r["Patient ID"]) for r in diseased}:
        labels = {r["Label"] for r in diseased if (r["Class"], r["Patient ID"]) == patient}
        assert patient[0] in labels  # worst_case never loses a patient
    worst, every = load_neh(tmp_path), load_neh(tmp_path, subset="all")
    assert len(worst) == sum(r["Label"] == r["Class"] for r in rows) < len(every) == len(rows)
    assert set(worst.patients) == set(every.patients)


def test_no_lesion_free_scans_when_asked(tmp_path):
    summary = write_synthetic_oct(tmp_path, 6, seed=2, normal_fraction=0.0, secondary_fraction=0.0, **SMALL)
    assert all(r["Label"] == r["Class"] for r in read_rows(summary))
    assert summary.worst_case_images == summary.n_images


def test_images_look_like_oct(tmp_path):
    summary = write_synthetic_oct(tmp_path, 3, seed=4, image_size=(256, 160), scans_per_eye=(1, 2))
    for row in read_rows(summary):
        path = tmp_path / row["Directory"]
        colour = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert colour.shape == (160, 256, 3)  # greyscale stored as colour, like NEH
        gray = read_image(path, "gray").astype(np.float32)
        rows = gray[:, 40:].mean(axis=1)  # leave out the scale bar corner
        vitreous = gray[:12, 40:]
        assert vitreous.mean() < 50 and vitreous.std() > 3  # dark, noisy vitreous on top
        assert rows.max() > rows[:12].mean() + 60  # a bright band (RPE) below it
        assert rows.argmax() > 30 and rows[-10:].mean() < rows.max() - 60  # the signal fades with depth


def test_scale_bar_is_burned_in(tmp_path):
    summary = write_synthetic_oct(tmp_path, 3, seed=4, **SMALL)
    path = tmp_path / read_rows(summary)[0]["Directory"]
    image = cv2.imread(str(path)).astype(int)
    chroma = np.abs(image[..., 1] - image[..., 0]) + np.abs(image[..., 1] - image[..., 2])
    ys, xs = np.nonzero(chroma > 60)
    assert len(ys) > 10 and ys.min() > 96 * 0.6 and xs.max() < 128 * 0.5  # coloured, bottom-left only


def test_lesions_change_the_retina_not_the_vitreous():
    anatomy = sample_anatomy(np.random.default_rng(5), 256, 160, "OD")
    plain = render_bscan(np.random.default_rng(9), anatomy, 0.0, (), scale_bar=False).astype(np.float32)
    again = render_bscan(np.random.default_rng(9), anatomy, 0.0, (), scale_bar=False).astype(np.float32)
    assert np.array_equal(plain, again)
    for lesion in ("DRUSEN", "CNV", "DME"):
        sick = render_bscan(np.random.default_rng(9), anatomy, 0.0, (lesion,), scale_bar=False).astype(np.float32)
        changed = np.abs(sick - plain).mean(axis=1)
        retina = int(np.argmax(plain.mean(axis=1)))  # the RPE row
        assert changed[:10].mean() < 0.5, lesion  # same noise draws: the vitreous is untouched
        assert changed[retina - 25:retina + 10].mean() > 2, lesion


def test_noise_knob_roughens_the_vitreous(tmp_path):
    def vitreous_std(noise):
        out = write_synthetic_oct(tmp_path / str(noise), 3, seed=8, noise=noise, image_size=(256, 160),
                                  scans_per_eye=(1, 1))
        return np.mean([read_image(tmp_path / str(noise) / r["Directory"], "gray")[:12, 40:].std()
                        for r in read_rows(out)])
    assert vitreous_std(2.0) > vitreous_std(0.5)


def test_invalid_arguments(tmp_path):
    with pytest.raises(ConfigError, match="classes"):
        write_synthetic_oct(tmp_path / "a", 3, classes=("NORMAL", "GA"))
    with pytest.raises(ConfigError, match="at least one patient per class"):
        write_synthetic_oct(tmp_path / "b", 2)
    with pytest.raises(ConfigError, match="normal_fraction"):
        write_synthetic_oct(tmp_path / "c", 3, classes=("DRUSEN", "CNV"))
    with pytest.raises(ConfigError, match="scans_per_eye"):
        write_synthetic_oct(tmp_path / "d", 3, scans_per_eye=(3, 2))
    summary = write_synthetic_oct(tmp_path / "e", 3, seed=1, **SMALL)
    with pytest.raises(ConfigError, match="not empty"):
        write_synthetic_oct(tmp_path / "e", 3, seed=1, **SMALL)
    before = files_of(summary.root)
    write_synthetic_oct(tmp_path / "e", 3, seed=1, overwrite=True, **SMALL)
    assert files_of(summary.root) == before


def test_four_classes_without_normal(tmp_path):
    summary = write_synthetic_oct(tmp_path, 4, classes=("CNV", "DME", "DRUSEN", "NORMAL"), **SMALL)
    assert summary.patients_per_class == {"CNV": 1, "DME": 1, "DRUSEN": 1, "NORMAL": 1}
    only_sick = write_synthetic_oct(tmp_path / "sick", 2, classes=("DRUSEN", "CNV"), normal_fraction=0.0, **SMALL)
    assert set(r["Label"] for r in read_rows(only_sick)) <= {"DRUSEN", "CNV"}


def test_demo_sized_dataset_is_fast(tmp_path):
    start = time.perf_counter()
    summary = write_synthetic_oct(tmp_path, 30, seed=0, image_size=(384, 248), scans_per_eye=(3, 6))
    seconds = time.perf_counter() - start
    assert 150 <= summary.n_images <= 360
    assert seconds < 20, f"{summary.n_images} images took {seconds:.1f} s"  # about 2-3 s on 2 free cores


def test_synthetic_data_half_written_by_a_killed_run_is_written_again(tmp_path):
    from medkd.config import OCTRecipe
    from medkd.data_prep import resolve_data

    recipe = OCTRecipe.model_validate({"data": {"synthetic": {"patients": 3, "image_size": [96, 64],
                                                              "scans_per_eye": [1, 1]}}})
    partial = tmp_path / "run" / "data" / "CNV" / "1" / "OD"
    partial.mkdir(parents=True)
    (partial / "001_CNV.jpg").write_bytes(b"\xff\xd8 cut short")  # killed before data_information.csv
    root, fmt = resolve_data(recipe, tmp_path / "run")
    assert fmt == "neh" and len(load_neh(root, subset="all")) >= 3
    mine = tmp_path / "mine"
    (mine / "CNV").mkdir(parents=True)
    (mine / "CNV" / "x.jpg").write_bytes(b"not ours")
    with pytest.raises(ConfigError, match="folder is not empty"):  # a folder the user named is never wiped
        resolve_data(recipe.model_copy(update={"data": recipe.data.model_copy(update={"root": str(mine)})}), None)
