"""Face choice by evidence (cascade + the landmark model's plausibility) and "no face found" on clutter."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from facekd.cli import main
from facekd.detect import face_candidates, landmark_box_from_detection
from facekd.face_choice import REFUSE_BELOW, assess_faces, model_is_informative
from facekd.geometry import box_from_landmarks
from facekd.pts_files import read_pts
from facekd.plausibility import (DISAGREEMENT_FACE, FOLLOWING_FACE, RESIDUAL_FACE, box_following,
                                 face_shape_model, mirror_disagreement, plausibility_evidence, shape_residual)
from facekd.predictor import LandmarkDetector, predict_files
from facekd.schemes import get_scheme
from facekd.synth.shape import MEAN_SHAPE
from kdcore.images import read_image
from tests.facekd.test_predictor import export, iou  # noqa: F401  (module fixture: the untrained tiny export)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_mirror_disagreement_by_hand():
    points = np.array([[10.0, 10.0], [20.0, 10.0]])
    # one point 3-4-5 away, one in place: mean 2.5 pixels over a box of side 50
    assert mirror_disagreement(points, points + [[3.0, 4.0], [0.0, 0.0]], (0, 0, 50, 50)) == pytest.approx(0.05)



def test_plausibility_evidence_by_hand():
    assert plausibility_evidence(None, None, FOLLOWING_FACE) == 0.0
    assert plausibility_evidence(None, None, FOLLOWING_FACE / 2) == pytest.approx(1.0)
    assert plausibility_evidence(None, None, -0.3) == 2.0  # points moving against the shift: anchored, clipped
    # tidy shapes and mirror agreement add nothing (a trained model draws them on clutter too) ...
    assert plausibility_evidence(RESIDUAL_FACE / 8, DISAGREEMENT_FACE / 8, FOLLOWING_FACE) == 0.0
    # ... shapes beyond any real face's count against, each clipped at -2
    assert plausibility_evidence(RESIDUAL_FACE * 2, DISAGREEMENT_FACE, FOLLOWING_FACE) == pytest.approx(-1.0)
    assert plausibility_evidence(RESIDUAL_FACE * 100, DISAGREEMENT_FACE * 100, 10.0) == -6.0


def test_box_following_by_hand():
    box = (10.0, 20.0, 50.0, 60.0)  # side 40: shifts of 6 pixels
    half = lambda b: np.array([[30.0, 40.0]]) + 0.5 * (np.array(b[:2]) - [10.0, 20.0])  # noqa: E731
    assert box_following(half, box, half(box)) == pytest.approx(0.5)
    assert box_following(half, box, half(box), shift=0.3) == pytest.approx(0.5)


def test_shape_residual_is_scale_and_pose_free():
    model = face_shape_model(68)
    assert face_shape_model(29) is None  # no shape model for schemes without synthetic faces
    angle = math.radians(20)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    wobbly = MEAN_SHAPE + np.random.default_rng(0).normal(0, 0.02, MEAN_SHAPE.shape)
    r = shape_residual(wobbly, model)
    assert 0.0 < r < 1.0
    assert shape_residual(300 * wobbly @ rotation.T + [40, 70], model) == pytest.approx(r, rel=1e-6)
    # a face with its points in the wrong order is not a face shape
    assert shape_residual(MEAN_SHAPE[np.random.default_rng(1).permutation(68)], model) > 1.0
    # a mirror image relabelled by the scheme is a face again
    mirrored = (wobbly * [-1, 1])[list(get_scheme(68).flip_permutation)]
    assert shape_residual(mirrored, model) < RESIDUAL_FACE


@pytest.mark.real_fixtures
def test_real_annotated_shapes_are_face_shapes(shared_fixtures):
    """The shape model is fitted on synthetic shapes only; every real 300-W annotation there must read as a face
    (RESIDUAL_FACE was set from these: measured largest 0.177, median 0.06) and a scrambled one must not."""
    model = face_shape_model(68)
    files = sorted([*(shared_fixtures / "faces-lfpw").glob("*.pts"), *(shared_fixtures / "faces-300w").glob("*.pts")])
    residuals = np.array([shape_residual(read_pts(f), model) for f in files])
    assert len(files) >= 50 and residuals.max() < RESIDUAL_FACE
    rng = np.random.default_rng(0)
    scrambled = [shape_residual(read_pts(f)[rng.permutation(68)], model) for f in files[:10]]
    assert min(scrambled) > 5 * residuals.max()


def test_untrained_model_is_uninformative_and_adds_nothing(export):  # noqa: F811
    detector = LandmarkDetector.load(export[0])
    assert not model_is_informative(detector)
    image = (np.random.default_rng(6).random((320, 320)) * 255).astype(np.uint8)
    for face in assess_faces(detector, np.dstack([image] * 3)):
        assert face.plausibility.evidence == 0.0 and not face.plausibility.informative
        assert face.face_score == pytest.approx(math.log(face.candidate.neighbors))


@pytest.fixture(scope="module")
def real_photos(shared_fixtures):
    """(path, RGB, annotated landmark box, cascade candidates) of every real photograph, detected once."""
    photos = sorted([*(shared_fixtures / "faces-lfpw").glob("*.png"), *(shared_fixtures / "faces-300w").glob("*.jpg")])
    if len(photos) < 50:
        pytest.skip("the real faces of ../shared/fixtures are incomplete")
    out = []
    for path in photos:
        rgb = read_image(path, "rgb")
        out.append((path, rgb, box_from_landmarks(read_pts(path.with_suffix(".pts"))), face_candidates(rgb)))
    return out


@pytest.mark.real_fixtures
def test_choice_on_real_photographs_is_not_worse_than_the_cascade_ranking(export, real_photos):  # noqa: F811
    """How often the annotated face is chosen (IoU > 0.3 of the chosen landmark box with the annotation's box), by
    the cascade's ranking before the landmark model had a say and by the face score now, with the suite's tiny
    export (untrained, hence uninformative: its plausibility must change nothing). Measured: 50 of 52 both ways,
    and no real face refused. With a model that is informative the same count was measured outside the suite
    (docs/face-choice.md)."""
    detector = LandmarkDetector.load(export[0])
    before = after = refused = 0
    for _, rgb, truth, candidates in real_photos:
        if candidates:
            before += iou(landmark_box_from_detection(candidates[0].box), truth) > 0.3
        accepted = [f for f in assess_faces(detector, rgb, candidates) if f.accepted]
        if not accepted:
            refused += 1
            continue
        after += iou(accepted[0].box, truth) > 0.3
    assert before >= 0.95 * len(real_photos)
    assert after >= before and refused == 0


class _Oracle(LandmarkDetector):
    """A landmark model that anchors on the one face it knows and, elsewhere, draws the mean face in the box it
    is given: what a trained model does on a face and on clutter, without training one."""

    face: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)

    def predict_pair(self, image, box, mirror=True):
        x0, y0, x1, y1 = self.face if iou(box, self.face) > 0.5 else box
        points = (MEAN_SHAPE + 0.5) * [x1 - x0, y1 - y0] + [x0, y0]
        return points, (points.copy() if mirror else None)


def _texture(seed: int, size: int = 320) -> np.ndarray:
    """Random blotches at three scales, grey, as RGB: the cascade finds 'faces' in some of them."""
    rng = np.random.default_rng(seed)
    image = sum(cv2.GaussianBlur(rng.normal(size=(size, size)), (0, 0), s) * s for s in (2, 6, 18))
    grey = ((image - image.min()) / np.ptp(image) * 255).astype(np.uint8)
    return np.dstack([grey] * 3)


def test_clutter_is_refused_when_the_model_cannot_anchor_on_it(export, tmp_path, monkeypatch):  # noqa: F811
    clutter = _texture(1)
    candidates = face_candidates(clutter)
    assert candidates, "the cascade no longer fires on this texture: pick another seed"
    detector = _Oracle(LandmarkDetector.load(export[0])._run, LandmarkDetector.load(export[0]).contract)
    monkeypatch.setattr("facekd.face_choice.model_is_informative", lambda d: True)
    faces = assess_faces(detector, clutter)
    assert faces and not any(f.accepted for f in faces)
    assert all(f.plausibility.following == pytest.approx(1.0) and f.face_score < REFUSE_BELOW for f in faces)
    path = tmp_path / "texture.png"
    cv2.imwrite(str(path), clutter)
    records = predict_files(detector, [path], tmp_path / "out")
    assert records[0]["pts"] is None and records[0]["no_face"].startswith(f"no face found in {path}")
    assert not list((tmp_path / "out").glob("*.pts"))
    written = json.loads((tmp_path / "out" / "faces.json").read_text())["images"][0]
    assert written["pts"] is None and len(written["refused"]) == len(candidates)
    # the same candidate where the model anchors is a face, whatever the cascade's weak evidence
    detector.face = faces[0].box
    anchored = assess_faces(detector, clutter, candidates)
    assert anchored[0].accepted and anchored[0].plausibility.following == pytest.approx(0.0)


@pytest.mark.real_fixtures
def test_cli_reports_no_face_per_image_and_fails_only_without_any_face(export, shared_fixtures, tmp_path,  # noqa: F811
                                                                        capsys):
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((200, 240, 3), 127, np.uint8))
    out = tmp_path / "out"
    assert main(["predict", str(export[0]), str(blank), "--out", str(out)]) == 1
    assert f"no face found in {blank}" in capsys.readouterr().out.splitlines()
    assert sorted(p.name for p in out.iterdir()) == ["faces.json"]
    photo = shared_fixtures / "faces-300w" / "einstein.jpg"
    assert main(["predict", str(export[0]), str(blank), str(photo), "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"no face found in {blank}" and lines[1].startswith(f"{out / 'einstein.pts'}: face box")
    faces = json.loads((out / "faces.json").read_text())["images"]
    assert [(f["path"], f["pts"]) for f in faces] == [("blank.png", None), ("einstein.jpg", "einstein.pts")]
    assert faces[0]["no_face"] == "no face found in blank.png" and str(tmp_path) not in (out / "faces.json").read_text()
    chosen = faces[1]
    assert len(chosen["box"]) == 4 and chosen["face"]["face_score"] >= REFUSE_BELOW and chosen["face"]["accepted"]
