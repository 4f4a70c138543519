"""From a layer stack to an 8-bit B-scan: reflectivity map, texture, shadows, speckle and log compression."""

from __future__ import annotations

import cv2
import numpy as np

from .anatomy import Anatomy, Layers

__all__ = ["reflectivity", "to_uint8", "draw_scale_bar", "Overlay"]


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: tuple[int, int]) -> np.ndarray:
    """About zero-mean, unit-std smooth noise: random values on a coarse ``cells`` grid, resized to ``shape``."""
    coarse = rng.standard_normal((max(cells[0], 2), max(cells[1], 2)), dtype=np.float32)
    coarse = (coarse - coarse.mean()) / (coarse.std() + 1e-6)
    return cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def _gamma_like(rng: np.random.Generator, looks: float, shape: tuple[int, ...]) -> np.ndarray:
    """Mean-one gamma(``looks``) variates by the Wilson-Hilferty cube of a normal (much faster than gamma)."""
    z = rng.standard_normal(shape, dtype=np.float32)
    base = np.maximum(1 - 1 / (9 * looks) + z / (3 * np.sqrt(looks)), 0.0)
    return base * base * base


class Overlay:
    """Things drawn on top of the layers: dark cysts (multiplicative) and bright foci (additive)."""

    def __init__(self) -> None:
        self.cysts: list[tuple[float, float, float, float, float]] = []  # x, y, rx, ry, darkness
        self.foci: list[tuple[float, float, float, float]] = []  # x, y, radius, brightness
        self.shadows: list[tuple[float, float, float]] = []  # x, half width, strength (below the RPE)


def reflectivity(rng: np.random.Generator, anatomy: Anatomy, layers: Layers, overlay: Overlay) -> np.ndarray:
    """Linear reflectivity map ``(H, W)`` float32 of one B-scan."""
    h, w = anatomy.height, anatomy.width
    y = np.arange(h, dtype=np.float32)[:, None]
    bounds = layers.boundaries()
    image = _stack(y, bounds, layers)
    # choroid below Bruch's membrane: bright choriocapillaris, dark vessel lumens deeper, attenuation with depth
    top = max(int(layers.bruch.min()) - 1, 0)
    if top < h:
        depth = y[top:] - layers.bruch[None, :]
        below = np.clip(depth + 0.5, 0.0, 1.0)
        np.maximum(depth, 0.0, out=depth)
        lumens = _smooth_noise(rng, (h - top, w), ((h - top) // 22, w // 26))
        scale = anatomy.choroid_depth
        vessel_band = np.exp(-((depth - 0.9 * scale) / (0.7 * scale)) ** 2)
        tissue = 0.013 * (1 - 0.9 * vessel_band * np.clip(lumens - 0.1, 0, 1)) * (1 + 0.3 * lumens)
        choroid = tissue * np.exp(-depth / scale) + 0.05 * np.exp(-depth / (0.01 * h))
        image[top:] += (choroid - image[top:]) * below

    # lateral texture of the layers (streaks are longer than tall) and column-wise gain (vertical striping)
    streaks = _smooth_noise(rng, (h, w), (h // 3, w // 24))
    columns = _smooth_noise(rng, (1, w), (1, w // 6))
    image *= (1 + anatomy.texture * streaks) * (1 + 0.08 * columns)
    # vessels in the inner retina and bright lesions shadow everything below them
    x = np.arange(w, dtype=np.float32)
    shade = np.ones(w, np.float32)
    for cx, half, strength in (*anatomy.vessels, *overlay.shadows):
        shade *= 1 - strength * np.exp(-(((x - cx) / half) ** 2))
    image *= np.where(y > bounds[0][None, :] + 0.04 * anatomy.thickness, shade[None, :], 1.0)
    for cx, cy, r, bright in overlay.foci:
        patch, py, px = _patch(image, cx, cy, 3 * r, 3 * r)
        patch += bright * 0.05 * np.exp(-((px - cx) ** 2 + (py - cy) ** 2) / (2 * r * r))
    for cx, cy, rx, ry, dark in overlay.cysts:
        patch, py, px = _patch(image, cx, cy, 1.2 * rx, 1.2 * ry)
        inside = ((px - cx) / rx) ** 2 + ((py - cy) / ry) ** 2
        patch *= 1 - dark * np.clip((1.15 - inside) / 0.3, 0.0, 1.0)
    if anatomy.hyaloid > 0:
        line = bounds[0] - 0.25 * anatomy.thickness - 0.08 * h * np.cos(np.pi * x / w)
        image += anatomy.hyaloid * 0.01 * np.exp(-(((y - line) / 1.2) ** 2)) * (y < bounds[0] - 3)
    return np.maximum(image, 0.0, out=image)


def _stack(y: np.ndarray, bounds: np.ndarray, layers: Layers) -> np.ndarray:
    """Piecewise-constant layers: each boundary switches to the next reflectivity over a 1-pixel soft edge."""
    image = np.zeros((len(y), bounds.shape[1]), np.float32)
    previous = np.zeros(bounds.shape[1], np.float32)
    step = np.empty_like(image)
    for i in range(len(layers.refl)):
        if not layers.thick[i].any():  # an empty lesion layer: its two boundaries coincide
            continue
        np.subtract(y + 0.5, bounds[i][None, :], out=step)
        np.clip(step, 0.0, 1.0, out=step)
        step *= (layers.refl[i] - previous)[None, :]
        image += step
        previous = layers.refl[i]
    return image


def _patch(image: np.ndarray, cx: float, cy: float, rx: float, ry: float):
    """A writable view of ``image`` around ``(cx, cy)`` and its row/column coordinates."""
    h, w = image.shape
    # Clamp both ends: a lesion pushed off the image by strong knobs must give an empty patch, not a
    # negative end index that slices from the far side.
    y0, y1 = min(max(int(cy - ry) - 1, 0), h), min(max(int(cy + ry) + 2, 0), h)
    x0, x1 = min(max(int(cx - rx) - 1, 0), w), min(max(int(cx + rx) + 2, 0), w)
    y1, x1 = max(y1, y0), max(x1, x0)
    py = np.arange(y0, y1, dtype=np.float32)[:, None]
    px = np.arange(x0, x1, dtype=np.float32)[None, :]
    return image[y0:y1, x0:x1], py, px


def to_uint8(rng: np.random.Generator, image: np.ndarray, anatomy: Anatomy, gain_db: float) -> np.ndarray:
    """Speckle (multiplicative gamma), noise floor (additive exponential), blur and log compression."""
    looks = anatomy.speckle_looks
    h, w = image.shape
    # speckle grains span about two pixels: draw at half resolution and interpolate
    half = (max(h // 2, 2), max(w // 2, 2))
    grains = _gamma_like(rng, looks, (2, *half))
    speckle = cv2.resize(grains[0], (w, h), interpolation=cv2.INTER_LINEAR)
    noise = cv2.resize(grains[1], (w, h), interpolation=cv2.INTER_LINEAR)
    # the noise floor falls off with depth: the deep sclera is darker than the vitreous
    depth_fall = np.linspace(1.0, 0.5, h, dtype=np.float32)[:, None]
    floor = 10 ** (anatomy.floor_db / 10) * depth_fall * noise
    signal = image * speckle + floor
    if anatomy.blur > 0.3:
        signal = cv2.GaussianBlur(signal, (0, 0), anatomy.blur)
    # levels linear in dB; cv2.log is several times faster than np.log10 on float32
    db = cv2.log(np.maximum(signal, 1e-9)) * np.float32(10 / np.log(10))
    low = anatomy.floor_db - 4.5 - anatomy.gain_db - gain_db
    scale = 255.0 / anatomy.display_db
    return cv2.convertScaleAbs(db, alpha=scale, beta=-low * scale)


def draw_scale_bar(image: np.ndarray) -> np.ndarray:
    """A burned-in coloured "200 um" L-shaped scale bar in the bottom-left corner (as on NEH exports); BGR out."""
    h, w = image.shape[:2]
    out = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image.copy()
    sx, sy = w / 768, h / 496
    x0, y0 = int(round(12 * sx)), int(round(h - 12 * sy))
    colour = (60, 220, 110)  # BGR
    thick = max(1, int(round(2 * sy)))
    cv2.line(out, (x0, y0), (x0 + int(round(17 * sx)), y0), colour, thick)  # 200 um laterally
    cv2.line(out, (x0, y0), (x0, y0 - int(round(52 * sy))), colour, thick)  # 200 um axially
    cv2.putText(out, "200um", (x0 + int(round(6 * sx)), y0 - int(round(6 * sy))), cv2.FONT_HERSHEY_PLAIN,
                0.8 * min(sx, sy) + 0.2, colour, 1, cv2.LINE_AA)
    return out
