"""Face choice by evidence (cascade + the landmark model's plausibility) and "no face found" on clutter."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from facekd.cli import main
from facekd.detect import face_candidates, landmark_box_from_detection
from facekd.face_choice import REFUSE_BELOW, assess_faces, model_is_informative
from facekd.geometry import box_from_landmarks
from facekd.io import read_pts
from facekd.plausibility import (RESIDUAL_FACE, face_shape_model, mirror_disagreement, plausibility_evidence,
                                 shape_residual)
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
    assert plausibility_evidence(None, 0.1) == 0.0
    assert plausibility_evidence(RESIDUAL_FACE / 2, 0.05) == pytest.approx(2.0)
    assert plausibility_evidence(RESIDUAL_FACE * 100, 10.0) == -4.0  # each measure clipped at -2


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
