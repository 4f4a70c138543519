"""Everything around the face: background clutter, occluders, and the camera (lighting, blur, noise)."""

from __future__ import annotations

import string

import cv2
import numpy as np

from facekd.synth.draw import curve, ellipse, fill, polyline

__all__ = ["background", "occlude", "finish"]


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    """A random colour, usually muted (photographs are rarely saturated)."""
    c = rng.integers(0, 256, 3).astype(np.float64)
    grey = c.mean()
    return tuple(int(v) for v in grey + (c - grey) * rng.uniform(0.2, 1.0) ** 1.5)


def background(size: tuple[int, int], rng: np.random.Generator, clutter: float) -> np.ndarray:
    """A gradient backdrop with up to ``14 * clutter`` random shapes, strokes and letters, slightly defocused."""
    w, h = size
    a, b = np.array(_colour(rng), np.float32), np.array(_colour(rng), np.float32)
    if rng.random() < 0.5:  # muted studio-like tones are common in portrait photos
        a, b = a * 0.4 + 60, b * 0.4 + 60
    img = cv2.convertScaleAbs(_gradient(w, h, rng.uniform(0, 2 * np.pi), a, b))
    n = int(round(clutter * rng.integers(3, 15)))
    scale = min(w, h)
    for _ in range(n):
        kind = rng.integers(5)
        c = rng.uniform(-0.1, 1.1, 2) * [w, h]
        colour = _colour(rng)
        if kind == 0:
            d = rng.uniform(0.05, 0.5, 2) * scale
            fill(img, np.array([c, c + [d[0], 0], c + d, c + [0, d[1]]]), colour)
        elif kind == 1:
            r = rng.uniform(0.03, 0.25) * scale
            ellipse(img, c, (r, r * rng.uniform(0.5, 1.0)), rng.uniform(0, 180), colour)
        elif kind == 2:
            pts = c + rng.normal(0, 0.25 * scale, (4, 2))
            polyline(img, curve(pts, 6), colour, rng.uniform(1, 0.04 * scale))
        elif kind == 3:
            text = "".join(rng.choice(list(string.ascii_letters + string.digits), rng.integers(2, 9)))
            cv2.putText(img, text, (int(c[0]), int(c[1])), int(rng.choice([0, 2, 3, 4])),
                        rng.uniform(0.3, 1.5) * scale / 256, colour, int(rng.integers(1, 4)), cv2.LINE_AA)
        else:
            pts = c + rng.normal(0, 0.15 * scale, (int(rng.integers(3, 7)), 2))
            fill(img, cv2.convexHull(pts.astype(np.float32)).reshape(-1, 2), colour)
    sigma = rng.uniform(0.0, 2.5) * scale / 256
    if sigma > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    return img


def occlude(img: np.ndarray, xy: np.ndarray, fw: float, skin: tuple[int, int, int], rng: np.random.Generator) -> str:
    """Cover part of the face with a hand, an object or a band (a scarf, a strand of hair); returns the kind."""
    kind = str(rng.choice(["hand", "object", "band"], p=[0.4, 0.4, 0.2]))
    target = xy[int(rng.integers(0, 68))]
    if kind == "hand":
        tone = tuple(float(np.clip(v * rng.uniform(0.85, 1.1), 0, 255)) for v in skin)
        direction = rng.uniform(0, 2 * np.pi)
        u = np.array([np.cos(direction), np.sin(direction)])
        palm = target + u * 0.28 * fw
        ellipse(img, palm, (0.2 * fw, 0.15 * fw), float(np.degrees(direction)), tone)
        side = np.array([-u[1], u[0]])
        for k in np.linspace(-1.0, 1.0, 4):
            base = palm - u * 0.1 * fw + side * k * 0.11 * fw
            tip = base - u * rng.uniform(0.15, 0.25) * fw
            polyline(img, np.stack([base, tip]), tone, 0.065 * fw)
            polyline(img, np.stack([base, tip]) + side * 0.032 * fw, tuple(v * 0.75 for v in tone), 1.0)
    elif kind == "object":
        r = rng.uniform(0.1, 0.25) * fw
        colour = _colour(rng)
        if rng.random() < 0.5:
            ellipse(img, target, (r, r * rng.uniform(0.5, 1.5)), rng.uniform(0, 180), colour)
        else:
            d = rng.normal(0, 1, 2)
            d = d / max(np.linalg.norm(d), 1e-6)
            polyline(img, np.stack([target - d * 2 * r, target + d * 2 * r]), colour, r)
    else:
        colour = _colour(rng)
        pts = target + rng.normal(0, 0.35 * fw, (3, 2))
        polyline(img, curve(np.concatenate([pts[:1], [target], pts[1:]]), 6), colour, rng.uniform(0.06, 0.15) * fw)
    return kind


def finish(img: np.ndarray, rng: np.random.Generator, noise: float, light_angle: float) -> np.ndarray:
    """Camera and light: lighting from ``light_angle`` (radians, 0 = from the image right), colour cast,
    contrast, sometimes greyscale, blur, sensor noise."""
    h, w = img.shape[:2]
    contrast, bright = rng.uniform(0.75, 1.2), rng.uniform(-25, 25)
    gain = rng.uniform(0.92, 1.08, 3) * contrast
    strength = 0.25 * rng.uniform(0.0, 1.0)
    light = _gradient(w, h, light_angle, (1.0 - strength) * gain, (1.0 + strength) * gain)
    out = cv2.multiply(img, light, dtype=cv2.CV_32F)
    out += np.float32(128.0 * (1 - contrast) + bright)
    if rng.random() < 0.1:
        out = cv2.cvtColor(cv2.cvtColor(out, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    sigma = rng.uniform(0.0, 1.2) * min(h, w) / 256
    if sigma > 0.25:
        out = cv2.GaussianBlur(out, (0, 0), sigma)
    if noise > 0:  # uniform noise with the drawn standard deviation: 4x cheaper to draw than Gaussian
        sd = noise * rng.uniform(0.3, 1.0)
        out += (rng.random(out.shape, dtype=np.float32) - np.float32(0.5)) * np.float32(sd * np.sqrt(12.0))
    return cv2.convertScaleAbs(np.maximum(out, 0.0, out=out))  # rounds and saturates at 255


def _gradient(w: int, h: int, angle: float, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """(h, w, C) float32 linear ramp from ``low`` to ``high`` (C values each) along ``angle`` (radians, 0 = to
    the right); computed on a grid 8 times coarser and upsampled, which is exact for a linear ramp."""
    low, high = np.atleast_1d(np.asarray(low, np.float32)), np.atleast_1d(np.asarray(high, np.float32))
    gw, gh = max(2, w // 8), max(2, h // 8)
    # pixel centres of the coarse grid, in full-image coordinates scaled to [-0.5, 0.5]
    x = ((np.arange(gw) + 0.5) * w / gw - 0.5) / max(w - 1, 1) - 0.5
    y = ((np.arange(gh) + 0.5) * h / gh - 0.5) / max(h - 1, 1) - 0.5
    ramp = np.cos(angle) * x[None, :] + np.sin(angle) * y[:, None]
    reach = 0.5 * (abs(np.cos(angle)) + abs(np.sin(angle)))  # ramp value at the far corner
    t = ((ramp + reach) / (2 * reach)).astype(np.float32)[..., None]
    grid = low + (high - low) * t
    out = cv2.resize(grid, (w, h), interpolation=cv2.INTER_LINEAR)
    return out.reshape(h, w, -1)
