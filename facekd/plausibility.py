"""How face-like a landmark model's prediction on a candidate box is: the evidence beside the cascade's.

Two measures, both in units that do not depend on the image size:

- ``shape_residual``: the predicted shape against a point distribution model of real-looking faces (our
  :class:`facekd.asm.ActiveShapeModel`, Procrustes-aligned, fitted on the statistical face model of
  :mod:`facekd.synth.shape`, whose spreads follow the 300-W annotations). The residual is the RMS distance between
  the aligned shape and its clipped reconstruction, divided by the shape's RMS radius. It needs no good landmark
  model to mean something: it says whether *a shape* is a face shape (a real annotated 68-point face scores 0.04 to 0.18, a
  scrambled one more than 1). Only the 68-point iBUG scheme has such a model; other schemes get
  ``None``.
- ``mirror_disagreement``: the mean distance between the prediction on the crop and the prediction on the
  mirrored crop flipped back (points relabelled by the scheme's ``flip_permutation``), divided by the side of the
  landmark box. A model that sees a face gives two nearly equal answers; on clutter its answers drift apart.
  This one means something only for a *trained* model: an untrained network answers alike on every input.

What the model's measures are worth depends on the model, so :class:`PlausibilityGate` first asks it about faces
whose points are known (synthetic faces of :mod:`facekd.synth`, drawn the same way on every call): a model whose
predictions there are not face shapes, or disagree with their mirror, is *uninformative* and its plausibility
is not used (``informative`` False in every record), so it can neither choose nor refuse a face.

Example:
    >>> import numpy as np
    >>> from facekd.synth.shape import MEAN_SHAPE
    >>> model = face_shape_model(68)
    >>> bool(shape_residual(MEAN_SHAPE * 100 + 50, model) < 0.01)
    True
    >>> scrambled = np.random.default_rng(0).permutation(MEAN_SHAPE)
    >>> bool(shape_residual(scrambled, model) > 0.3)
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np

from facekd.asm import ActiveShapeModel

__all__ = ["face_shape_model", "shape_residual", "mirror_disagreement", "Plausibility", "plausibility_evidence",
           "RESIDUAL_FACE", "DISAGREEMENT_FACE"]

# The residual and disagreement of a face, the scale the evidence is measured against (see plausibility_evidence).
# RESIDUAL_FACE: the largest residual of the 52 real 300-W annotations of ../shared/fixtures (50 LFPW test faces:
# median 0.06, largest 0.10; Einstein 0.10; Breaking Bad's turned head 0.177) rounded up; DISAGREEMENT_FACE: a
# mirrored prediction within 10 % of the box side.
RESIDUAL_FACE = 0.20
DISAGREEMENT_FACE = 0.10

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


@dataclass(frozen=True)
class Plausibility:
    """The landmark model's evidence on one candidate: ``residual`` (None without a shape model),
    ``disagreement``, and ``evidence`` (:func:`plausibility_evidence`; 0 when ``informative`` is False)."""

    residual: float | None
    disagreement: float | None
    evidence: float
    informative: bool

    def to_dict(self) -> dict:
        return {"shape_residual": None if self.residual is None else round(self.residual, 4),
                "mirror_disagreement": None if self.disagreement is None else round(self.disagreement, 4), "plausibility": round(self.evidence, 3),
                "model_informative": self.informative}


def plausibility_evidence(residual: float | None, disagreement: float | None) -> float:
    """``-log2`` of each measure over its face scale, summed over the measures there are, each clipped to
    [-2, 2]: +2 per measure for a prediction four times tighter than a face's limit, 0 at the limit, -2 at
    four times beyond it.

    Example:
        >>> plausibility_evidence(0.05, 0.025)
        3.0
        >>> plausibility_evidence(None, 0.4)
        -2.0
    """
    terms = [] if disagreement is None else [disagreement / DISAGREEMENT_FACE]
    if residual is not None:
        terms.append(residual / RESIDUAL_FACE)
    return float(sum(np.clip(-math.log2(max(t, 1e-9)), -2.0, 2.0) for t in terms))
