"""Drawing the head: hair, body, ears, skin, eyes, brows, nose, lips, glasses.

Every feature is drawn from the projected landmarks themselves (contours pass through the points), so the
labels lie on what is drawn: eye corners 36/39/42/45 are the corners of the drawn eye, the jaw points are on
the drawn face outline, the mouth points on the drawn lip contours.

``shade`` is a signed float layer (H, W) for soft shadows and highlights: the caller blurs it and multiplies
the image by ``1 + shade`` before the crisp features are drawn.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from facekd.synth.appearance import Appearance
from facekd.synth.draw import curve, draw_clipped, ellipse, fill, polyline
from facekd.synth.shape import AUX

__all__ = ["face_outline", "draw_back", "draw_skin", "draw_shading", "draw_features", "draw_front"]

ToImage = Callable[[np.ndarray], np.ndarray]  # model-space (N, 2) at depth 0 -> image (N, 2)


def _scale(colour: tuple[float, ...], k: float, add: float = 0.0) -> tuple[float, ...]:
    return tuple(max(0.0, min(255.0, float(c) * k + add)) for c in colour)


def face_outline(xy: np.ndarray) -> np.ndarray:
    """Closed face contour: the jaw (points 0-16, exactly) and the hairline arc over the forehead."""
    return curve(np.concatenate([xy[0:17], xy[AUX.forehead]]), samples=4, closed=True)


def _hair_polygon(app: Appearance, xy: np.ndarray, to_image: ToImage) -> np.ndarray:
    skull = xy[AUX.skull]
    if app.hair_style in ("short", "bald"):
        return curve(skull, samples=4)
    drop = 0.45 if app.hair_style == "medium" else 1.5
    right = np.array([[0.60, 0.0], [0.64, drop * 0.5], [0.62 + 0.1 * drop, drop]])
    left = right[::-1] * [-1, 1]
    ends = to_image(np.concatenate([right[::-1], left[::-1]]))
    return np.concatenate([ends[:3], curve(skull, samples=4), ends[3:]])


def draw_back(img: np.ndarray, xy: np.ndarray, to_image: ToImage, app: Appearance, yaw: float, fw: float,
              rng: np.random.Generator) -> None:
    """Hair behind the head, clothes, neck and ears (everything the face outline is drawn over)."""
    hair = _hair_polygon(app, xy, to_image)
    if app.hair_style == "bald":
        fill(img, hair, _scale(app.skin, 0.9))
    else:
        fill(img, hair, app.hair)
        top = to_image(np.array([[0.0, -1.0]]))[0]

        def strands(layer: np.ndarray, origin: np.ndarray) -> None:
            for _ in range(int(rng.integers(15, 30))):
                end = hair[rng.integers(len(hair))] + rng.normal(0, 0.05 * fw, 2)
                mid = (top + end) / 2 + rng.normal(0, 0.08 * fw, 2)
                tone = _scale(app.hair, rng.uniform(0.7, 1.25), rng.uniform(-10, 12))
                polyline(layer, curve(np.stack([top, mid, end]) - origin, 5), tone, rng.uniform(1, 0.03 * fw + 1))

        draw_clipped(img, hair, strands)
    body = to_image(np.array([[-0.3, 0.8], [-0.8, 0.9], [-1.25, 1.1], [-1.5, 1.6], [-1.6, 3.5], [1.6, 3.5],
                              [1.5, 1.6], [1.25, 1.1], [0.8, 0.9], [0.3, 0.8]]))
    fill(img, np.concatenate([curve(body[:5], 4), curve(body[5:], 4)]), app.clothes)
    skin = _scale(app.skin, 0.8)
    fill(img, curve(xy[AUX.neck], 4), skin)
    neckline = to_image(np.array([[-0.36, 0.9], [-0.25, 1.0], [0.0, rng.uniform(1.02, 1.3)], [0.25, 1.0],
                                  [0.36, 0.9]]))
    fill(img, curve(neckline, 4), skin)
    if app.hair_style != "long":
        for side, sign in ((slice(0, 5), -1.0), (slice(5, 10), 1.0)):
            if sign * yaw > 25:  # far side: hidden behind the head
                continue
            ear = curve(xy[AUX.ears][side], 4, closed=True)
            fill(img, ear, _scale(app.skin, 0.92))
            polyline(img, ear, _scale(app.skin, 0.7), max(1.0, 0.01 * fw), closed=True)
            inner = xy[AUX.ears][side][1:4] * 0.65 + xy[AUX.ears][side][[0, 4]].mean(0) * 0.35
            polyline(img, curve(inner, 4), _scale(app.skin, 0.68), max(1.0, 0.012 * fw))


def draw_skin(img: np.ndarray, xy: np.ndarray, app: Appearance, fw: float, rng: np.random.Generator) -> np.ndarray:
    """Fill the face; return its outline (for edge shading)."""
    outline = face_outline(xy)
    fill(img, outline, app.skin)
    if app.stubble:
        region = curve(np.concatenate([xy[3:14], xy[[35, 33, 31]]]), 3, closed=True)

        def dots(layer: np.ndarray, origin: np.ndarray) -> None:
            grain = rng.normal(0.0, 10.0, layer.shape[:2])[..., None]
            tint = layer * 0.78 + np.array(app.hair) * 0.12 + grain
            layer[...] = np.clip(tint, 0, 255).astype(layer.dtype)

        draw_clipped(img, region, dots, feather=0.025 * fw)
    return outline


def _frame(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors of the face's own down (nose bridge to chin) and right, in image coordinates."""
    down = (xy[8] - xy[27]) / max(float(np.linalg.norm(xy[8] - xy[27])), 1e-6)
    return down, np.array([down[1], -down[0]])


def draw_shading(shade: np.ndarray, xy: np.ndarray, fw: float, light_x: float) -> None:
    """Soft shadows (< 0) and highlights (> 0) of a lit face; ``light_x`` > 0 means light from the image right."""
    down, right = _frame(xy)
    t = max(1.0, 0.03 * fw)
    for eye in (xy[36:42], xy[42:48]):
        w = np.linalg.norm(eye[3] - eye[0])
        ellipse(shade, eye.mean(0) - 0.1 * w * down, (0.75 * w, 0.5 * w), 0.0, -0.16)  # socket
        polyline(shade, curve(eye[0:4]) - 0.18 * w * down, -0.25, t * 0.6)  # lid crease
    dark, inner = (31, 39) if light_x > 0 else (35, 42)  # the side of the nose away from the light
    polyline(shade, np.stack([xy[27] * 0.6 + xy[inner] * 0.4, (xy[29] + xy[dark]) / 2, xy[dark]]), -0.22, 1.5 * t)
    polyline(shade, xy[27:31], 0.12, t)  # bridge highlight
    ellipse(shade, xy[30], (0.03 * fw, 0.022 * fw), 0.0, 0.12)
    polyline(shade, curve(xy[31:36]) + 0.012 * fw * down, -0.22, t)  # under the nose
    for wing, sign in ((31, -1.0), (35, 1.0)):
        bend = xy[wing] * 0.6 + xy[29] * 0.4 + sign * 0.015 * fw * right
        polyline(shade, curve(np.stack([xy[wing], bend, xy[29] * 0.4 + xy[wing] * 0.6])), -0.2, 0.7 * t)
    polyline(shade, curve(xy[55:60]) + 0.03 * fw * down, -0.18, 1.5 * t)  # under the lower lip
    polyline(shade, curve(xy[49:54]) - 0.01 * fw * down, 0.1, t)
    for cheek, sign in (((xy[2] + xy[31] * 1.4) / 2.4, -1.0), ((xy[14] + xy[35] * 1.4) / 2.4, 1.0)):
        ellipse(shade, cheek, (0.09 * fw, 0.06 * fw), 0.0, 0.05 * sign * np.sign(light_x))
    polyline(shade, curve(xy[5:12]) - 0.05 * fw * down, -0.06, 2 * t)  # jaw underside


def _eye(img: np.ndarray, pts: np.ndarray, app: Appearance, fw: float, gaze: np.ndarray) -> None:
    upper, lower = curve(pts[0:4], 5), curve(pts[[3, 4, 5, 0]], 5)
    contour = np.concatenate([upper, lower[1:-1]])
    width = float(np.linalg.norm(pts[3] - pts[0]))
    opening = float(np.linalg.norm((pts[1] + pts[2]) / 2 - (pts[4] + pts[5]) / 2))
    if opening > 0.6:
        sclera = _scale((232, 226, 220), float(np.mean(app.skin)) / 230 * 0.25 + 0.75)

        def eyeball(layer: np.ndarray, origin: np.ndarray) -> None:
            fill(layer, contour - origin, sclera)
            r = 0.24 * width
            c = (pts[0] + pts[3]) / 2 + gaze * width - origin + [0, 0.05 * width]
            ellipse(layer, c, (r, r), 0.0, app.iris)
            ellipse(layer, c, (r, r), 0.0, _scale(app.iris, 0.55), max(1, int(round(r * 0.18))))
            ellipse(layer, c, (0.45 * r, 0.45 * r), 0.0, (12, 10, 10))
            ellipse(layer, c + [0.3 * r, -0.3 * r], (0.15 * r, 0.15 * r), 0.0, (245, 245, 245))
            polyline(layer, upper - origin + [0, 0.06 * width], _scale(app.skin, 0.45), max(1.0, 0.05 * width))

        draw_clipped(img, contour, eyeball)
    lash = tuple(min(a, b) for a, b in zip((40.0, 30.0, 30.0), _scale(app.brow, 0.6)))
    polyline(img, upper, lash, max(1.0, 0.014 * fw))
    polyline(img, lower, _scale(app.skin, 0.62), max(1.0, 0.006 * fw))


def draw_features(img: np.ndarray, xy: np.ndarray, app: Appearance, fw: float, rng: np.random.Generator) -> None:
    """Crisp features over the shaded skin: brows, eyes, nostrils, lips."""
    down, _ = _frame(xy)
    thick = app.brow_thickness * fw
    # brow points run along the upper part of the drawn brow, as in the 300-W markup
    for idx, taper in ((slice(17, 22), [0.45, 0.8, 0.95, 1.0, 1.0]), (slice(22, 27), [1.0, 1.0, 0.95, 0.8, 0.45])):
        top = curve(xy[idx], 4)
        k = np.interp(np.linspace(0, 4, len(top)), np.arange(5), taper)[:, None]
        poly = np.concatenate([top - down * thick * 0.15 * k, (top + down * thick * 0.85 * k)[::-1]])
        fill(img, poly, app.brow)
    gaze = rng.normal(0, 0.05, 2) * [1.0, 0.4]
    _eye(img, xy[36:42], app, fw, gaze)
    _eye(img, xy[42:48], app, fw, gaze)
    nostril = _scale(app.skin, 0.32)
    for a, b in ((31, 32), (35, 34)):
        c = xy[a] * 0.4 + xy[b] * 0.6 - down * 0.012 * fw
        d = xy[b] - xy[a]
        ellipse(img, c, (0.022 * fw, 0.01 * fw), float(np.degrees(np.arctan2(d[1], d[0]))), nostril)
    polyline(img, curve(xy[31:36]), _scale(app.skin, 0.72), max(1.0, 0.006 * fw))
    outer = np.concatenate([curve(xy[48:55], 4), curve(xy[[54, 55, 56, 57, 58, 59, 48]], 4)[1:-1]])
    fill(img, outer, app.lips)
    inner_up, inner_low = curve(xy[60:65], 4), curve(xy[[64, 65, 66, 67, 60]], 4)
    fill(img, np.concatenate([curve(xy[48:55], 4), inner_up[::-1]]), _scale(app.lips, 0.85))
    gap = float(np.linalg.norm(xy[62] - xy[66]))
    if gap > 1.0:
        fill(img, np.concatenate([inner_up, inner_low[1:-1]]), (70, 22, 28))
        depth = min(0.045 * fw, 0.55 * gap)
        teeth = np.concatenate([inner_up[2:-2], (inner_up[2:-2] + down * depth)[::-1]])
        fill(img, teeth, (228, 224, 212))
    polyline(img, inner_up, _scale(app.lips, 0.45), max(1.0, 0.008 * fw))
    if gap > 1.0:
        polyline(img, inner_low, _scale(app.lips, 0.6), max(1.0, 0.004 * fw))


def draw_front(img: np.ndarray, xy: np.ndarray, app: Appearance, fw: float, rng: np.random.Generator) -> None:
    """Things in front of the face that belong to the subject: fringe and glasses."""
    if app.fringe:
        arc = xy[AUX.forehead][2:-2]
        k = 0.1 + 0.3 * np.sin(np.linspace(0, np.pi, len(arc)))[:, None]
        wave = 1.0 + 0.15 * np.sin(np.linspace(0, rng.uniform(6, 14), len(arc)))[:, None]
        lower = arc + (xy[27] - arc) * k * wave
        fill(img, np.concatenate([curve(arc, 3), curve(lower, 3)[::-1]]), app.hair)
    if app.glasses:
        frame = (20, 20, 24)
        t = max(1.0, 0.012 * fw)
        centres = []
        for eye in (xy[36:42], xy[42:48]):
            w = np.linalg.norm(eye[3] - eye[0])
            c = eye.mean(0)
            centres.append(c)
            angle = float(np.degrees(np.arctan2(*(eye[3] - eye[0])[::-1])))
            ellipse(img, c, (0.8 * w, 0.55 * w), angle, frame, int(round(t)))
        left, right = centres
        polyline(img, np.stack([left * 0.7 + right * 0.3, left * 0.3 + right * 0.7]), frame, t)  # bridge
