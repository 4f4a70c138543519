"""Which detected face to predict on, by evidence, and when to say "no face found".

Every cascade candidate (:func:`facekd.detect.face_candidates`) is predicted on, with its mirror, by the
landmark model, and gets a **face score**::

    face score = ln(merged neighbour windows)                         the cascade's evidence
                 + PLAUSIBILITY_WEIGHT * plausibility                 the landmark model's (facekd.plausibility)

The candidate chosen is the one with the best face score plus the cascade ranking's size term
(``SIZE_WEIGHT * ln(side / largest side)``, :mod:`facekd.detect`); a candidate whose face score is below
``REFUSE_BELOW`` scores like clutter and is refused: no landmarks are predicted on it, and an image whose
candidates are all refused gets "no face found". The plausibility only counts when the model is informative
(:func:`model_is_informative`): with an untrained or unrelated model the face score is the cascade's alone, and
since the cascade never reports fewer than 4 neighbours (ln 4 = 1.39), nothing is refused.

``faces.json`` and the console report the chosen box and every term; docs/face-choice.md has the figures.

Example:
    >>> import numpy as np
    >>> from facekd.predictor import LandmarkDetector
    >>> detector = LandmarkDetector.load("exports/face-student")            # doctest: +SKIP
    >>> faces = assess_faces(detector, np.zeros((64, 64, 3), np.uint8))     # doctest: +SKIP
    >>> faces                                                                 # doctest: +SKIP
    []
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

from facekd.detect import SIZE_WEIGHT, FaceCandidate, face_candidates, landmark_box_from_detection
from facekd.plausibility import (DISAGREEMENT_FACE, FOLLOWING_FACE, RESIDUAL_FACE, Plausibility, box_following,
                                 face_shape_model, mirror_disagreement, plausibility_evidence, shape_residual)

if TYPE_CHECKING:
    from facekd.predictor import LandmarkDetector

__all__ = ["FaceChoice", "assess_faces", "model_is_informative", "PLAUSIBILITY_WEIGHT", "REFUSE_BELOW"]

Box = tuple[float, float, float, float]

# Chosen with two small models, each trained on one half of the 52 real photographs of ../shared/fixtures and
# judged on the other half, and 40 random textures (benchmarks/face_choice.py): the annotated face is chosen in
# 50 of 52 (as by the cascade ranking alone), no real face is refused, 3 of the 11 textures the cascade fires on
# are refused. A higher threshold refuses Einstein (4 neighbours, plausibility -0.3: face score 1.24); a weight
# of 2 lets the model overturn the cascade on real faces (47 of 52).
PLAUSIBILITY_WEIGHT = 0.5
REFUSE_BELOW = 1.2
GATE_FACES = 6


@dataclass(frozen=True)
class FaceChoice:
    """One candidate with the landmark model's answer on it: ``box`` is the landmark box predicted in,
    ``points`` the (K, 2) landmarks (the mirror average with ``tta``), ``face_score`` as in the module text,
    ``accepted`` whether it scores above clutter."""

    candidate: FaceCandidate
    box: Box
    points: np.ndarray
    plausibility: Plausibility
    face_score: float
    rank_score: float
    accepted: bool

    def to_dict(self) -> dict:
        return {**self.candidate.to_dict(), "landmark_box": [round(v, 2) for v in self.box],
                "face_score": round(self.face_score, 3), "rank_score": round(self.rank_score, 3),
                "cascade_score": round(math.log(max(self.candidate.neighbors, 1)), 3),
                **self.plausibility.to_dict(), "accepted": self.accepted}


_informative: "weakref.WeakKeyDictionary[LandmarkDetector, bool]" = weakref.WeakKeyDictionary()


def model_is_informative(detector: "LandmarkDetector") -> bool:
    """Whether the model's plausibility means anything: on ``GATE_FACES`` synthetic faces with known points
    (:mod:`facekd.synth`, fixed seed, boxes from their points) its predictions must stay on the face when the box
    moves (median :func:`~facekd.plausibility.box_following` below ``FOLLOWING_FACE``), be face shapes (median
    residual below ``RESIDUAL_FACE``) and agree with their mirror (median disagreement below
    ``DISAGREEMENT_FACE``). An untrained network fails, and so does one that draws the same shape in every box.
    Asked once per detector."""
    if detector in _informative:
        return _informative[detector]
    from facekd.geometry import box_from_landmarks
    from facekd.synth.render import Difficulty, render_face, sample_face_params, sample_subject

    shape_model = face_shape_model(detector.n_points)
    rng = np.random.default_rng(0)
    measures = []
    for _ in range(GATE_FACES):
        identity, appearance = sample_subject(rng)
        image, truth = render_face(sample_face_params(rng, Difficulty(), identity, appearance), rng, (160, 160))
        if detector.n_points != len(truth):
            break  # no synthetic faces of this scheme: judge by nothing, use nothing
        box = box_from_landmarks(truth)
        points, mirrored = detector.predict_pair(image, box)
        if mirrored is None:
            break
        following = box_following(lambda b: detector.predict_pair(image, b, mirror=False)[0], box, points)
        residual = shape_residual(points, shape_model) if shape_model is not None else 0.0
        measures.append((following, residual, mirror_disagreement(points, mirrored, box)))
    verdict = len(measures) == GATE_FACES and all(
        m < limit for m, limit in zip(np.median(measures, axis=0), (FOLLOWING_FACE, RESIDUAL_FACE, DISAGREEMENT_FACE)))
    _informative[detector] = bool(verdict)
    return bool(verdict)


def assess_faces(detector: "LandmarkDetector", rgb: np.ndarray, candidates: Sequence[FaceCandidate] | None = None,
                 tta: bool = False) -> list[FaceChoice]:
    """Every candidate with its landmarks and face score, best first (accepted ones before refused ones)."""
    if candidates is None:
        candidates = face_candidates(rgb)
    if not candidates:
        return []
    informative = model_is_informative(detector)
    shape_model = face_shape_model(detector.n_points)
    largest = max(c.box[2] - c.box[0] for c in candidates)
    out = []
    for candidate in candidates:
        box = landmark_box_from_detection(candidate.box)
        points, mirrored = detector.predict_pair(rgb, box, mirror=True)
        residual = shape_residual(points, shape_model) if shape_model is not None else None
        disagreement = mirror_disagreement(points, mirrored, box) if mirrored is not None else None
        following = box_following(lambda b: detector.predict_pair(rgb, b, mirror=False)[0], box, points)
        evidence = plausibility_evidence(residual, disagreement, following) if informative else 0.0
        plausibility = Plausibility(residual, disagreement, following, evidence, informative)
        face_score = math.log(max(candidate.neighbors, 1)) + PLAUSIBILITY_WEIGHT * evidence
        side = candidate.box[2] - candidate.box[0]
        rank_score = face_score + SIZE_WEIGHT * math.log(side / largest)
        if tta and mirrored is not None:
            points = (points + mirrored) / 2.0
        out.append(FaceChoice(candidate, box, points, plausibility, face_score, rank_score,
                              face_score >= REFUSE_BELOW))
    return sorted(out, key=lambda f: (not f.accepted, -f.rank_score, -(f.box[2] - f.box[0])))
