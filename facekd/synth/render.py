"""One synthetic face image and its 68 landmarks, from sampled parameters.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> identity, appearance = sample_subject(rng)
    >>> params = sample_face_params(rng, Difficulty(), identity, appearance)
    >>> image, points = render_face(params, rng, image_size=(128, 96))
    >>> image.shape, image.dtype.name, points.shape
    ((96, 128, 3), 'uint8', (68, 2))
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from kdcore.errors import ConfigError
from facekd.synth import face, scene
from facekd.synth.appearance import Appearance
from facekd.synth.draw import fill
from facekd.synth.shape import N_LANDMARKS, Expression, Identity, Pose, build_face, project

__all__ = ["Difficulty", "FaceParams", "sample_subject", "sample_face_params", "render_face"]

_MARGIN = 2.0  # pixels between any landmark and the image border


@dataclass(frozen=True)
class Difficulty:
    """How hard the images are.

    Attributes:
        pose_range: largest |yaw|, |pitch|, |roll| in degrees, each at most 45 (most faces are drawn near
            frontal); a single number is the yaw limit, pitch and roll then get half of it.
        expression_scale: multiplies mouth opening, smile, brow raise and eye closure (0 = neutral faces).
        occluder_prob: chance that a hand, object or band covers part of the face.
        clutter: 0 (plain gradient) to 1 (many shapes and letters) in the background.
        noise: standard deviation of the (uniform) sensor noise in grey levels; each image draws 30-100 % of it.
    """

    pose_range: tuple[float, float, float] = (30.0, 15.0, 15.0)
    expression_scale: float = 1.0
    occluder_prob: float = 0.15
    clutter: float = 0.6
    noise: float = 4.0

    def __post_init__(self) -> None:
        pose = self.pose_range
        if isinstance(pose, (int, float)):
            pose = (float(pose), float(pose) / 2, float(pose) / 2)
        pose = tuple(float(v) for v in pose)
        # beyond 45 degrees the orthographic, single-silhouette head model stops looking like a head
        if len(pose) != 3 or not all(0.0 <= v <= 45.0 for v in pose):
            raise ConfigError("pose_range: expected yaw, pitch, roll limits in [0, 45] degrees, "
                              f"got {self.pose_range!r}")
        object.__setattr__(self, "pose_range", pose)
        for key, low, high in (("expression_scale", 0.0, 2.0), ("occluder_prob", 0.0, 1.0), ("clutter", 0.0, 1.0),
                               ("noise", 0.0, 50.0)):
            value = getattr(self, key)
            if not (isinstance(value, (int, float)) and low <= value <= high):
                raise ConfigError(f"{key}: expected a number in [{low}, {high}], got {value!r}")


@dataclass(frozen=True)
class FaceParams:
    """Everything geometric about one face; ``size`` is the jaw width over the image's shorter side and
    ``offset`` the shift of the face centre from the image centre, as fractions of width and height."""

    identity: Identity
    appearance: Appearance
    expression: Expression = field(default_factory=Expression)
    pose: Pose = field(default_factory=Pose)
    size: float = 0.38
    offset: tuple[float, float] = (0.0, -0.02)


def sample_subject(rng: np.random.Generator) -> tuple[Identity, Appearance]:
    """Shape and looks of one person (keep them fixed across that person's images)."""
    return Identity.sample(rng), Appearance.sample(rng)


def sample_face_params(rng: np.random.Generator, difficulty: Difficulty, identity: Identity,
                       appearance: Appearance) -> FaceParams:
    """Per-image expression, pose and framing for a given subject."""
    return FaceParams(identity, appearance, Expression.sample(rng, difficulty.expression_scale),
                      Pose.sample(rng, difficulty.pose_range), size=float(rng.uniform(0.26, 0.52)),
                      offset=(float(rng.normal(0, 0.05)), float(rng.normal(-0.02, 0.04))))


def _place(pts3d: np.ndarray, params: FaceParams, w: int, h: int) -> tuple[float, np.ndarray]:
    """Face width in pixels and model-origin position that keep every landmark inside the image."""
    fw = params.size * min(w, h)
    centre = np.array([w / 2 + params.offset[0] * w, h / 2 + params.offset[1] * h])
    lm = project(pts3d[:N_LANDMARKS], params.pose, fw, centre)
    span = np.ptp(lm, axis=0)
    room = np.array([w, h]) - 2 * _MARGIN - 1
    shrink = min(1.0, float(np.min(room / np.maximum(span, 1e-6))))
    if shrink < 1.0:
        fw *= shrink
        lm = project(pts3d[:N_LANDMARKS], params.pose, fw, centre)
    low, high = lm.min(0), lm.max(0)
    centre += np.maximum(_MARGIN - low, 0) - np.maximum(high - (np.array([w, h]) - 1 - _MARGIN), 0)
    return fw, centre


def render_face(params: FaceParams, rng: np.random.Generator, image_size: tuple[int, int] = (256, 256),
                difficulty: Difficulty = Difficulty()) -> tuple[np.ndarray, np.ndarray]:
    """Draw one face: returns the RGB uint8 image (H, W, 3) and its 0-based (68, 2) landmarks (x, y).

    ``rng`` drives everything not in ``params``: background, lighting, gaze, occluder, blur and noise.
    """
    w, h = (int(v) for v in image_size)
    if w < 32 or h < 32:
        raise ConfigError(f"image_size: expected at least 32 x 32 pixels, got {image_size!r}")
    pts3d = build_face(params.identity, params.expression)
    fw, centre = _place(pts3d, params, w, h)
    xy = project(pts3d, params.pose, fw, centre)

    def to_image(model_xy: np.ndarray) -> np.ndarray:
        return project(np.column_stack([model_xy, np.zeros(len(model_xy))]), params.pose, fw, centre)

    app = params.appearance
    img = scene.background((w, h), rng, difficulty.clutter)
    light = rng.uniform(0, 2 * np.pi)
    face.draw_back(img, xy, to_image, app, params.pose.yaw, fw, rng)
    outline = face.draw_skin(img, xy, app, fw, rng)
    shade = np.zeros((h, w), np.float32)
    face.draw_shading(shade, xy, fw, float(np.cos(light)))
    mask = np.zeros((h, w), np.float32)
    fill(mask, outline, 1.0)
    rim = cv2.GaussianBlur(mask, (0, 0), max(0.5, 0.07 * fw))
    shade = cv2.GaussianBlur(shade, (0, 0), max(0.5, 0.015 * fw)) - 0.3 * mask * (1.0 - rim)
    img = np.clip(img * (1.0 + shade[..., None]), 0, 255).astype(np.uint8)
    face.draw_features(img, xy, app, fw, rng)
    face.draw_front(img, xy, app, fw, rng)
    if rng.random() < difficulty.occluder_prob:
        scene.occlude(img, xy, fw, app.skin, rng)
    img = scene.finish(img, rng, difficulty.noise, light)
    return img, xy[:N_LANDMARKS].copy()
