"""facekd.synth: deterministic synthetic faces whose 68 landmarks lie on the drawn features."""

from __future__ import annotations

import csv
import dataclasses
import json

import cv2
import numpy as np
import pytest
from scipy.spatial import procrustes

from facekd.pts_files import read_pts
from facekd.synth import (Difficulty, FaceParams, Pose, render_face, sample_face_params, sample_subject,
                          subject_params, write_synthetic_faces)
from facekd.synth.shape import MEAN_SHAPE, build_face, project, Expression
from kdcore.errors import ConfigError, DataError
from kdcore.images import read_image

CLEAN = Difficulty(occluder_prob=0.0, clutter=0.0, noise=0.0)


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_same_seed_gives_byte_identical_files(tmp_path):
    a = write_synthetic_faces(tmp_path / "a", n_faces=6, seed=3, image_size=(96, 80))
    b = write_synthetic_faces(tmp_path / "b", n_faces=6, seed=3, image_size=(96, 80))
    c = write_synthetic_faces(tmp_path / "c", n_faces=6, seed=4, image_size=(96, 80))
    files_a, files_b, files_c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert len(files_a) == 6 * 2 + 3  # png + pts per face, subjects.csv, README, manifest
    assert files_a == files_b
    assert a["images"] == b["images"] == c["images"]
    assert all(files_a[name] != files_c[name] for name in a["images"])


def test_pts_round_trip_and_images(tmp_path):
    w, h = 112, 96
    summary = write_synthetic_faces(tmp_path, n_faces=8, seed=0, image_size=(w, h))
    assert len(summary["images"]) == 8
    for name in summary["images"]:
        image = read_image(tmp_path / name, mode="rgb")
        assert image.shape == (h, w, 3)
        assert image.std() > 10  # not a blank image
        points = read_pts(tmp_path / name.replace(".png", ".pts"), n_points=68)
        assert points.shape == (68, 2)
        assert (points >= 0).all() and (points[:, 0] <= w - 1).all() and (points[:, 1] <= h - 1).all()
        # the face is a face-sized thing: jaw wider than a tenth of the image, eyes above the mouth
        assert points[16, 0] - points[0, 0] > w / 10
        assert points[36:48, 1].mean() < points[48:68, 1].mean()


def test_subjects_csv_matches_the_files(tmp_path):
    write_synthetic_faces(tmp_path, n_faces=10, seed=1, image_size=(64, 64))
    with open(tmp_path / "subjects.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["image", "subject"]
        rows = list(reader)
    images = sorted(p.name for p in tmp_path.glob("*.png"))
    assert sorted(r["image"] for r in rows) == images
    assert all(r["image"].startswith(r["subject"] + "_") for r in rows)
    assert all((tmp_path / r["image"]).with_suffix(".pts").is_file() for r in rows)
    per_subject = {}
    for r in rows:
        per_subject[r["subject"]] = per_subject.get(r["subject"], 0) + 1
    assert len(per_subject) == 10 // 4  # default: n_faces // 4 subjects
    assert max(per_subject.values()) - min(per_subject.values()) <= 1
    manifest = json.loads((tmp_path / "synth_manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["seed"] == 1 and manifest["n_faces"] == 10


def test_identity_is_fixed_per_subject_and_differs_between_subjects(tmp_path):
    identities = [subject_params(0, k)[0] for k in range(8)]
    assert len({dataclasses.astuple(i) for i in identities}) == 8
    assert subject_params(0, 3) == subject_params(0, 3)
    # without pose and expression, a subject's faces differ only by placement (a similarity transform)
    write_synthetic_faces(tmp_path, n_faces=6, subjects=2, seed=5, image_size=(96, 96), pose_range=0.0,
                          expression_scale=0.0)
    shapes = {name.stem: read_pts(name) for name in sorted(tmp_path.glob("*.pts"))}
    within = [procrustes(shapes["s0000_00"], shapes[f"s0000_0{i}"])[2] for i in (1, 2)]
    within += [procrustes(shapes["s0001_00"], shapes[f"s0001_0{i}"])[2] for i in (1, 2)]
    between = procrustes(shapes["s0000_00"], shapes["s0001_00"])[2]
    assert max(within) < 1e-5
    assert between > 100 * max(max(within), 1e-8)


def test_outer_eye_corners_are_on_the_drawn_eye_corners():
    # The drawn eyelids meet at points 36 and 45: darker than the skin just beyond them. A label moved outward
    # by the same distance would not be darker than the skin beyond it (the control below).
    hits, control = [], []
    for i in range(15):
        rng = np.random.default_rng(i)
        identity, appearance = sample_subject(rng)
        appearance = dataclasses.replace(appearance, glasses=False)  # frames would sit beside the corners
        image, pts = render_face(sample_face_params(rng, CLEAN, identity, appearance), rng, (256, 256), CLEAN)
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(float)

        def lum(p):
            x, y = np.round(p).astype(int)
            return grey[y - 1:y + 2, x - 1:x + 2].mean()

        for corner, inner in ((36, 39), (45, 42)):
            out = pts[corner] - pts[inner]
            hits.append(lum(pts[corner]) < 0.9 * lum(pts[corner] + 0.3 * out))
            control.append(lum(pts[corner] + 0.3 * out) < 0.9 * lum(pts[corner] + 0.6 * out))
    assert np.mean(hits) >= 0.9
    assert np.mean(control) <= 0.3


def test_pose_moves_the_nose_the_documented_way():
    identity, _ = subject_params(0, 0)
    pts3d = build_face(identity, Expression())

    def nose_offset(pose):
        xy = project(pts3d, pose, 100.0, (0.0, 0.0))
        return xy[30] - (xy[36] + xy[45]) / 2

    assert nose_offset(Pose(yaw=20))[0] > nose_offset(Pose())[0] + 5  # nose turns to the image right
    assert nose_offset(Pose(pitch=15))[1] < nose_offset(Pose())[1] - 3  # tilts up
    roll = project(pts3d, Pose(roll=30), 100.0, (0.0, 0.0))
    angle = np.degrees(np.arctan2(*(roll[45] - roll[36])[::-1]))
    assert angle == pytest.approx(30.0, abs=1e-6)


def test_expression_opens_the_mouth_and_closes_the_eyes():
    identity, appearance = subject_params(0, 1)
    rng = np.random.default_rng(0)
    base = FaceParams(identity, appearance)
    _, neutral = render_face(base, np.random.default_rng(0), (128, 128), CLEAN)
    _, open_mouth = render_face(dataclasses.replace(base, expression=Expression(mouth_open=0.1)), rng, (128, 128),
                                CLEAN)
    _, shut = render_face(dataclasses.replace(base, expression=Expression(eye_closure=1.0)), rng, (128, 128), CLEAN)
    assert abs(neutral[66, 1] - neutral[62, 1]) < 0.5
    assert open_mouth[66, 1] - open_mouth[62, 1] > 0.05 * (open_mouth[16, 0] - open_mouth[0, 0])
    assert np.linalg.norm(shut[37] - shut[41]) < 0.3 * np.linalg.norm(neutral[37] - neutral[41])


def test_refuses_a_folder_it_did_not_write(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not a previous synthetic output"):
        write_synthetic_faces(tmp_path, n_faces=2, image_size=(64, 64))
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    with pytest.raises(DataError, match="not a folder"):
        write_synthetic_faces(tmp_path / "notes.txt", n_faces=2, image_size=(64, 64))


def test_rewrites_its_own_output_and_removes_stale_faces(tmp_path):
    write_synthetic_faces(tmp_path, n_faces=8, seed=0, image_size=(64, 64))
    write_synthetic_faces(tmp_path, n_faces=3, seed=0, image_size=(64, 64))
    assert len(list(tmp_path.glob("*.png"))) == 3 and len(list(tmp_path.glob("*.pts"))) == 3
    (tmp_path / "extra.jpg").write_bytes(b"x")
    with pytest.raises(DataError, match="extra.jpg"):
        write_synthetic_faces(tmp_path, n_faces=3, seed=0, image_size=(64, 64))


@pytest.mark.parametrize("kwargs, key", [
    (dict(n_faces=0), "n_faces"), (dict(n_faces=4, subjects=5), "subjects"), (dict(n_faces=2, seed=-1), "seed"),
    (dict(n_faces=2, image_size=(16, 64)), "image_size"), (dict(n_faces=2, noise=-1.0), "noise"),
    (dict(n_faces=2, pose_range=(10, 90, 0)), "pose_range"), (dict(n_faces=2, occluder_prob=1.5), "occluder_prob"),
])
def test_bad_arguments_name_the_key(tmp_path, kwargs, key):
    with pytest.raises(ConfigError, match=key):
        write_synthetic_faces(tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_embedded_mean_shape_is_the_mean_of_real_faces(shared_fixtures):
    # Independent recomputation: scipy's Procrustes mean of the real LFPW annotations.
    shapes = [read_pts(p) for p in sorted((shared_fixtures / "faces-lfpw").glob("*.pts"))]
    if not shapes:
        pytest.skip("faces-lfpw fixtures are absent")
    mean = np.mean([procrustes(shapes[0], s)[1] for s in shapes], axis=0)
    for _ in range(3):
        mean = np.mean([procrustes(mean, s)[1] for s in shapes], axis=0)
    assert procrustes(mean, MEAN_SHAPE)[2] < 1e-3
    assert procrustes(mean, shapes[0])[2] > 2e-3  # a single real face is much further from the mean
