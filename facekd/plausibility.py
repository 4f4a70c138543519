"""How face-like a landmark model's prediction on a candidate box is: the evidence beside the cascade's.

Two measures, both in units that do not depend on the image size:

- ``shape_residual``: the predicted shape against a point distribution model of real-looking faces (our
  :class:`facekd.asm.ActiveShapeModel`, Procrustes-aligned, fitted on the statistical face model of
  :mod:`facekd.synth.shape`, whose spreads follow the 300-W annotations). The residual is the RMS distance
  between the aligned shape and its clipped reconstruction, divided by the shape's RMS radius. It needs no good
  landmark model to mean something: it says whether *a shape* is a face shape (a real annotated 68-point face
  scores 0.04 to 0.18, a scrambled one more than 1). Only the 68-point iBUG scheme has such a model; other
  schemes get ``None``.
- ``mirror_disagreement``: the mean distance between the prediction on the crop and the prediction on the
  mirrored crop flipped back (points relabelled by the scheme's ``flip_permutation``), divided by the side of the
  landmark box. A model that sees a face gives two nearly equal answers; on clutter its answers drift apart.
  This one means something only for a *trained* model: an untrained network answers alike on every input.

- ``box_following``: how far the predicted points follow a shifted box. The crop is moved by 15 % of the box
  side left, right, up and down; on a face the model's points stay on the face (they move little in the image),
  on clutter there is nothing to hold them and they move with the crop. The measure is the mean displacement of
  the points along the shift over the shift (0: anchored to the image, 1: glued to the box). Of the three it is
  the one that separated faces from clutter on real photographs (see :mod:`facekd.face_choice`): a trained
  model draws a face-shaped, nearly mirror-symmetric set of points on clutter too, but cannot anchor it.

What the model's measures are worth depends on the model, so :func:`facekd.face_choice.model_is_informative`
first asks it about faces whose points are known (synthetic faces of :mod:`facekd.synth`, drawn the same way on
every call): a model whose predictions there follow the box, are not face shapes, or disagree with their mirror
is *uninformative* and its plausibility is not used (``informative`` False in every record), so it can neither
choose nor refuse a face.

Example:
    >>> import numpy as np
    >>> from facekd.synth.shape import MEAN_SHAPE
    >>> model = face_shape_model(68)
    >>> bool(shape_residual(MEAN_SHAPE * 100 + 50, model) < RESIDUAL_FACE)
    True
    >>> scrambled = np.random.default_rng(0).permutation(MEAN_SHAPE)
    >>> bool(shape_residual(scrambled, model) > 0.3)
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Sequence

import numpy as np

from facekd.asm import ActiveShapeModel

Box = tuple[float, float, float, float]

__all__ = ["face_shape_model", "shape_residual", "mirror_disagreement", "box_following", "Plausibility",
           "plausibility_evidence", "RESIDUAL_FACE", "DISAGREEMENT_FACE", "FOLLOWING_FACE", "SHIFT"]

# The residual and disagreement of a face, the scale the evidence is measured against (see plausibility_evidence).
# RESIDUAL_FACE: the largest residual of the 52 real 300-W annotations of ../shared/fixtures (50 LFPW test faces:
# median 0.06, largest 0.10; Einstein 0.10; Breaking Bad's turned head 0.177) rounded up; DISAGREEMENT_FACE: a
# mirrored prediction within 10 % of the box side.
RESIDUAL_FACE = 0.20
DISAGREEMENT_FACE = 0.10
# FOLLOWING_FACE: the box-following ratio where the evidence turns from face to clutter (see face_choice);
# SHIFT: the box shift, a fraction of its side.
FOLLOWING_FACE = 0.5
SHIFT = 0.15

_N_SHAPES = 600
_POSE_RANGE = (45.0, 20.0, 30.0)  # yaw, pitch, roll (degrees): the range of in-the-wild faces in 300-W


@lru_cache(maxsize=4)
def face_shape_model(n_points: int) -> ActiveShapeModel | None:
    """The point distribution model of faces for a scheme (``None`` for schemes other than iBUG 68).

    Fitted on 600 shapes drawn from :mod:`facekd.synth.shape` (identity, expression and pose; fixed seed, so
    the same model in every process), Procrustes-aligned, 98 % of the variance, modes clipped at 3 SD.
    """
    from facekd.synth.shape import N_LANDMARKS, Expression, Identity, Pose, build_face, project

    if n_points != N_LANDMARKS:
        return None
    rng = np.random.default_rng(0)
    shapes = [project(build_face(Identity.sample(rng), Expression.sample(rng))[:N_LANDMARKS] * 1.0,
                      Pose.sample(rng, _POSE_RANGE), 1.0, (0.0, 0.0))[:N_LANDMARKS] for _ in range(_N_SHAPES)]
    return ActiveShapeModel(variance=0.98, clip=3.0, align=True).fit(np.stack(shapes))


def shape_residual(points: np.ndarray, model: ActiveShapeModel) -> float:
    """RMS distance of a (K, 2) shape from its ASM reconstruction, in units of the shape's RMS radius
    (0: a face shape the model spans; about 1: no resemblance)."""
    points = np.asarray(points, dtype=np.float64)
    centred = points - points.mean(axis=0)
    radius = math.sqrt(float((centred ** 2).sum(axis=1).mean()))
    if not math.isfinite(radius) or radius == 0.0:
        return float("inf")
    # soften() reconstructs in the aligned frame and maps back, so the residual is in the input's pixels.
    softened = model.soften(points)
    return math.sqrt(float(((points - softened) ** 2).sum(axis=1).mean())) / radius


def mirror_disagreement(points: np.ndarray, mirrored_back: np.ndarray, box: Sequence[float]) -> float:
    """Mean distance between two (K, 2) predictions of one face, divided by the mean side of ``box``."""
    x0, y0, x1, y1 = (float(v) for v in box)
    side = ((x1 - x0) + (y1 - y0)) / 2.0
    distance = np.linalg.norm(np.asarray(points, np.float64) - np.asarray(mirrored_back, np.float64), axis=1)
    return float(distance.mean()) / side


def box_following(predict: Callable[[Box], np.ndarray], box: Sequence[float], points: np.ndarray,
                  shift: float = SHIFT) -> float:
    """Mean displacement of the points along a box shift, over the shift (four shifts of ``shift`` times the mean
    box side); ``predict(box) -> (K, 2)`` image points, ``points`` its answer on ``box`` itself.

    Example:
        >>> glued = lambda b: np.array([[b[0] + 5.0, b[1] + 5.0]])    # points drawn where the box is
        >>> box_following(glued, (0, 0, 40, 40), glued((0, 0, 40, 40)))
        1.0
        >>> box_following(lambda b: np.array([[7.0, 9.0]]), (0, 0, 40, 40), np.array([[7.0, 9.0]]))
        0.0
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    step = shift * ((x1 - x0) + (y1 - y0)) / 2.0
    ratios = []
    for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        moved = predict((x0 + dx * step, y0 + dy * step, x1 + dx * step, y1 + dy * step))
        ratios.append(float(np.mean((moved - points) @ np.array([dx, dy], np.float64))) / step)
    return float(np.mean(ratios))


@dataclass(frozen=True)
class Plausibility:
    """The landmark model's evidence on one candidate: ``residual`` (None without a shape model),
    ``disagreement`` (None without a flip permutation), ``following`` and ``evidence``
    (:func:`plausibility_evidence`; 0 when ``informative`` is False)."""

    residual: float | None
    disagreement: float | None
    following: float
    evidence: float
    informative: bool

    def to_dict(self) -> dict:
        def rounded(value):
            return None if value is None else round(value, 4)

        return {"shape_residual": rounded(self.residual), "mirror_disagreement": rounded(self.disagreement),
                "box_following": rounded(self.following), "plausibility": round(self.evidence, 3),
                "model_informative": self.informative}


def _log_ratio(value: float, limit: float) -> float:
    return float(np.clip(-math.log2(max(value, 1e-9) / limit), -2.0, 2.0))


def plausibility_evidence(residual: float | None, disagreement: float | None, following: float) -> float:
    """Evidence in [-6, 2]: ``-log2(following / FOLLOWING_FACE)`` clipped to [-2, 2] (+2: points anchored to the
    image, 0 at the limit, -2 glued to the box and beyond), plus, for the residual and the mirror disagreement,
    the same log-ratio to their face limits counted only when negative: a shape beyond what any real face
    showed is evidence against, a tidy one is no evidence for (a trained model draws tidy shapes on clutter).

    Example:
        >>> plausibility_evidence(0.05, 0.03, 0.125)
        2.0
        >>> plausibility_evidence(0.8, None, 1.0)
        -3.0
    """
    evidence = _log_ratio(following, FOLLOWING_FACE)
    for value, limit in ((residual, RESIDUAL_FACE), (disagreement, DISAGREEMENT_FACE)):
        if value is not None:
            evidence += min(0.0, _log_ratio(value, limit))
    return evidence
