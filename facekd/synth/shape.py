"""A small statistical 68-point face model: a mean shape, hand-made deformation modes and a 3-D-ish pose.

Model space: x to the image right, y down, z towards the camera; the mean shape's jaw spans x in [-0.5, 0.5]
(one "face width"). Identity modes are fixed per subject, expression modes and pose per image.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> pts3d = build_face(Identity.sample(rng), Expression())
    >>> xy = project(pts3d, Pose(yaw=10.0), face_width=100.0, centre=(128.0, 128.0))
    >>> xy[:N_LANDMARKS].shape
    (68, 2)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["MEAN_SHAPE", "N_LANDMARKS", "AUX", "Identity", "Expression", "Pose", "build_face", "project"]

N_LANDMARKS = 68

# Mean of the 50 LFPW test faces (300-W re-annotation): generalised Procrustes alignment, averaged with its
# mirror image (so the model is symmetric; asymmetry comes from pose), eyes levelled, centred on the bounding
# box and scaled to a jaw width of 1; rounded to 3 decimals. Computed once during development, not at run time.
MEAN_SHAPE = np.array([
    [-0.500, -0.318], [-0.494, -0.185], [-0.479, -0.052], [-0.455, 0.080], [-0.407, 0.204], [-0.329, 0.311],
    [-0.235, 0.398], [-0.124, 0.469], [0.000, 0.491], [0.124, 0.469], [0.235, 0.398], [0.329, 0.311],
    [0.407, 0.204], [0.455, 0.080], [0.479, -0.052], [0.494, -0.185], [0.500, -0.318],
    [-0.399, -0.428], [-0.342, -0.477], [-0.263, -0.491], [-0.180, -0.478], [-0.100, -0.444],
    [0.100, -0.444], [0.180, -0.478], [0.263, -0.491], [0.342, -0.477], [0.399, -0.428],
    [0.000, -0.341], [0.000, -0.254], [0.000, -0.168], [0.000, -0.080],
    [-0.091, -0.018], [-0.048, -0.003], [0.000, 0.013], [0.048, -0.003], [0.091, -0.018],
    [-0.305, -0.327], [-0.252, -0.360], [-0.185, -0.358], [-0.133, -0.314], [-0.192, -0.302], [-0.256, -0.303],
    [0.133, -0.314], [0.185, -0.358], [0.252, -0.360], [0.305, -0.327], [0.256, -0.303], [0.192, -0.302],
    [-0.202, 0.142], [-0.126, 0.115], [-0.054, 0.104], [0.000, 0.115], [0.054, 0.104], [0.126, 0.115],
    [0.202, 0.142], [0.131, 0.210], [0.059, 0.242], [0.000, 0.248], [-0.059, 0.242], [-0.131, 0.210],
    [-0.171, 0.147], [-0.055, 0.147], [0.000, 0.151], [0.055, 0.147], [0.171, 0.147],
    [0.056, 0.178], [0.000, 0.184], [-0.056, 0.178],
])

# Hand-made depth offsets over a head-shaped base surface: the nose sticks out, the eyes sit back.
_DEPTH_OFFSET = np.zeros(N_LANDMARKS)
_DEPTH_OFFSET[17:27] = 0.03
_DEPTH_OFFSET[27:31] = [0.03, 0.08, 0.14, 0.22]
_DEPTH_OFFSET[31:36] = [0.05, 0.10, 0.13, 0.10, 0.05]
_DEPTH_OFFSET[36:48] = -0.04
_DEPTH_OFFSET[[36, 45]] = -0.06
_DEPTH_OFFSET[48:68] = 0.05
_DEPTH_OFFSET[[48, 54, 60, 64]] = 0.01

_JAW, _BROWS, _NOSE, _EYES, _MOUTH = range(0, 17), range(17, 27), range(27, 36), range(36, 48), range(48, 68)
_N_ARC = 13


class AUX:
    """Index ranges of the auxiliary points that follow the 68 landmarks in a built face."""

    forehead = slice(N_LANDMARKS, N_LANDMARKS + _N_ARC)           # hairline arc, from point 16 to point 0
    skull = slice(N_LANDMARKS + _N_ARC, N_LANDMARKS + 2 * _N_ARC)  # head outline for the hair, right to left
    ears = slice(N_LANDMARKS + 2 * _N_ARC, N_LANDMARKS + 2 * _N_ARC + 10)  # 5-point outlines, left then right
    neck = slice(N_LANDMARKS + 2 * _N_ARC + 10, N_LANDMARKS + 2 * _N_ARC + 16)


@dataclass(frozen=True)
class Identity:
    """Per-subject shape: each field is a signed deformation in face widths (0 = the mean face)."""

    face_width: float = 0.0
    face_length: float = 0.0
    eye_distance: float = 0.0
    eye_size: float = 0.0
    nose_length: float = 0.0
    nose_width: float = 0.0
    mouth_width: float = 0.0
    lip_thickness: float = 0.0
    jaw_shape: float = 0.0      # > 0 square jaw, < 0 pointed chin
    brow_height: float = 0.0
    forehead: float = 0.0

    @classmethod
    def sample(cls, rng: np.random.Generator) -> "Identity":
        # Spreads roughly match the between-face spread of the real 300-W annotations.
        sd = dict(face_width=0.05, face_length=0.06, eye_distance=0.018, eye_size=0.12, nose_length=0.02,
                  nose_width=0.12, mouth_width=0.10, lip_thickness=0.25, jaw_shape=0.5, brow_height=0.015,
                  forehead=0.05)
        return cls(**{k: float(np.clip(rng.normal(0.0, s), -2.2 * s, 2.2 * s)) for k, s in sd.items()})


@dataclass(frozen=True)
class Expression:
    """Per-image expression: mouth_open in face widths, the others in [0, 1]-ish units (0 = neutral)."""

    mouth_open: float = 0.0
    smile: float = 0.0
    brow_raise: float = 0.0
    eye_closure: float = 0.0

    @classmethod
    def sample(cls, rng: np.random.Generator, scale: float = 1.0) -> "Expression":
        mouth = rng.choice([0.0, rng.uniform(0.01, 0.05), rng.uniform(0.05, 0.14)], p=[0.45, 0.35, 0.2])
        smile = rng.uniform(0.0, 1.0) if rng.random() < 0.5 else 0.0
        brow = rng.uniform(-0.3, 1.0) if rng.random() < 0.4 else 0.0
        closure = rng.choice([rng.uniform(0.0, 0.3), rng.uniform(0.5, 1.0)], p=[0.9, 0.1])
        return cls(float(mouth * scale), float(min(smile * scale, 1.5)), float(brow * scale),
                   float(np.clip(closure * scale, 0.0, 1.0)))


@dataclass(frozen=True)
class Pose:
    """Head pose in degrees: yaw turns the nose to the image right (> 0), pitch tilts it up, roll in-plane."""

    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0

    @classmethod
    def sample(cls, rng: np.random.Generator, pose_range: tuple[float, float, float]) -> "Pose":
        # Triangular draws: most faces near-frontal, as in 300-W, with a tail up to the range.
        yaw, pitch, roll = (float(r * (rng.random() - rng.random())) for r in pose_range)
        return cls(yaw, pitch, roll)


def _landmarks(identity: Identity, expression: Expression) -> np.ndarray:
    p = MEAN_SHAPE.copy()
    x, y = p[:, 0], p[:, 1]  # views: edits below change p
    eyes = {"l": list(range(36, 42)), "r": list(range(42, 48))}
    # identity
    x[list(_JAW)] *= 1.0 + identity.face_width
    lower = y > MEAN_SHAPE[30, 1]
    y[lower] += identity.face_length * (y[lower] - MEAN_SHAPE[30, 1]) / 0.57
    for side, sign in (("l", -1.0), ("r", 1.0)):
        idx = eyes[side]
        centre = p[idx].mean(0)
        p[idx] = centre + (p[idx] - centre) * (1.0 + identity.eye_size)
        x[idx] += sign * identity.eye_distance
    y[list(_BROWS)] -= identity.brow_height
    y[list(range(29, 36))] += identity.nose_length * np.array([0.5, 1, 1, 1, 1, 1, 1])
    y[28] += identity.nose_length * 0.3
    x[list(range(31, 36))] *= 1.0 + identity.nose_width
    x[list(_MOUTH)] *= 1.0 + identity.mouth_width
    y[list(range(48, 55))] -= identity.lip_thickness * 0.012 * np.array([0, 1, 1, 1, 1, 1, 0])
    y[list(range(55, 60))] += identity.lip_thickness * 0.015
    square = np.array([0, 0, 0, 0.3, 0.8, 1.0, 0.9, 0.5, 0, 0.5, 0.9, 1.0, 0.8, 0.3, 0, 0, 0])
    x[list(_JAW)] += identity.jaw_shape * 0.03 * square * np.sign(x[list(_JAW)])
    # expression: close the mean's slightly parted lips first, then open by mouth_open
    mid = (p[[61, 62, 63]] + p[[67, 66, 65]]) / 2
    p[[61, 62, 63]] = mid
    p[[67, 66, 65]] = mid
    drop = expression.mouth_open
    y[list(range(55, 60))] += drop
    y[[65, 66, 67]] += drop
    y[list(_JAW)] += drop * 0.7 * np.clip(1.0 - np.abs(np.arange(17) - 8) / 7.0, 0, 1)
    y[[60, 64, 48, 54]] += drop * 0.4
    corners = expression.smile * np.array([0.035, -0.04])
    for idx, sign in (([48, 60], -1.0), ([54, 64], 1.0)):
        x[idx] += sign * corners[0]
        y[idx] += corners[1]
    y[[49, 53, 59, 55]] += corners[1] * 0.5
    y[list(range(55, 60))] -= expression.smile * 0.01
    y[list(_BROWS)] -= expression.brow_raise * 0.035 * np.array([0.6, 0.8, 1, 1, 0.9, 0.9, 1, 1, 0.8, 0.6])
    c = float(np.clip(expression.eye_closure, 0.0, 1.0))
    for up, low in (([37, 38], [41, 40]), ([43, 44], [47, 46])):
        top, bottom = p[up].copy(), p[low].copy()
        p[up] = top + (bottom - top) * c * 0.85
        p[low] = bottom + (top - bottom) * c * 0.15
    return p


def _auxiliary(p: np.ndarray, identity: Identity) -> np.ndarray:
    y0 = p[[0, 16], 1].mean()
    half = (p[16, 0] - p[0, 0]) / 2
    t = np.linspace(0.0, np.pi, _N_ARC + 2)[1:-1]
    top = 0.47 + identity.forehead + identity.face_length * 0.3
    forehead = np.stack([half * np.cos(t) * (1 + 0.05 * np.sin(t)), y0 - top * np.sin(t)], 1)
    t2 = np.linspace(-0.35, np.pi + 0.35, _N_ARC)
    skull = np.stack([(half + 0.08) * np.cos(t2) * 1.02, y0 - (top + 0.12) * np.sin(t2)], 1)
    ear = np.array([[-0.02, -0.40], [0.06, -0.42], [0.10, -0.30], [0.06, -0.12], [0.0, -0.04]])
    ears = np.concatenate([ear * [-1, 1] + [-half, 0], ear + [half, 0]])
    neck = np.array([[-0.27, 0.15], [-0.28, 0.7], [-0.36, 0.95], [0.36, 0.95], [0.28, 0.7], [0.27, 0.15]])
    return np.concatenate([forehead, skull, ears, neck])


def _depth(p: np.ndarray) -> np.ndarray:
    base = 0.38 * np.sqrt(np.clip(1.0 - (p[:, 0] / 0.56) ** 2, 0.0, 1.0))
    z = base.copy()
    z[:N_LANDMARKS] += _DEPTH_OFFSET
    z[AUX.skull] = 0.0
    z[AUX.ears] = -0.05
    z[AUX.neck] = -0.05
    return z


def build_face(identity: Identity, expression: Expression) -> np.ndarray:
    """Model-space points (68 landmarks then the auxiliary points in ``AUX``), shape (N, 3)."""
    landmarks = _landmarks(identity, expression)
    points = np.concatenate([landmarks, _auxiliary(landmarks, identity)])
    return np.column_stack([points, _depth(points)])


def project(points3d: np.ndarray, pose: Pose, face_width: float, centre: tuple[float, float]) -> np.ndarray:
    """Rotate by yaw and pitch (orthographic), roll in the image plane, scale to pixels and place (N, 2)."""
    if points3d.ndim != 2 or points3d.shape[1] != 3:
        raise ValueError(f"points3d must have shape (N, 3), got {points3d.shape}")
    yaw, pitch, roll = np.radians([pose.yaw, pose.pitch, pose.roll])
    x, y, z = points3d.T
    x, z = x * np.cos(yaw) + z * np.sin(yaw), -x * np.sin(yaw) + z * np.cos(yaw)
    y = y * np.cos(pitch) - z * np.sin(pitch)
    cr, sr = np.cos(roll), np.sin(roll)
    xy = np.stack([x * cr - y * sr, x * sr + y * cr], 1)
    return xy * face_width + np.asarray(centre, dtype=np.float64)
