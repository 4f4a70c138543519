"""Lesions as edits of the layer stack: drusen (RPE elevations), CNV (fluid, SHRM, PED, disruption), DME (cysts).

Heights and widths are in pixels and scale with the image; ``strength`` (>0) scales lesion size, so a small
value makes the classes harder to tell apart.
"""

from __future__ import annotations

import cv2
import numpy as np

from .anatomy import INDEX, Anatomy, Layers
from .render import Overlay

__all__ = ["LESIONS", "add_drusen", "add_cnv", "add_dme"]


def _dome(x: np.ndarray, centre: float, half_width: float, power: float = 1.0) -> np.ndarray:
    """A smooth bump of height 1 and support ``centre +- half_width`` (raised cosine to ``power``)."""
    u = np.clip(np.abs(x - centre) / half_width, 0, 1)
    return ((0.5 + 0.5 * np.cos(np.pi * u)) ** power).astype(np.float32)


def _wobble(rng: np.random.Generator, x: np.ndarray, knots: int, amount: float) -> np.ndarray:
    """Smooth random modulation around 1 (cubic through ``knots`` random values)."""
    values = rng.standard_normal((1, knots)).astype(np.float32)
    smooth = cv2.resize(values, (len(x), 1), interpolation=cv2.INTER_CUBIC)[0]
    return np.clip(1 + amount * smooth, 0.2, None)


def _near_fovea(rng: np.random.Generator, anatomy: Anatomy, spread: float) -> float:
    return float(np.clip(anatomy.fovea_x + rng.normal(0, spread) * anatomy.width, 0.08 * anatomy.width,
                         0.92 * anatomy.width))


def add_drusen(rng: np.random.Generator, anatomy: Anatomy, layers: Layers, overlay: Overlay,
               strength: float = 1.0) -> None:
    """Dome-shaped RPE elevations with medium-reflective content; the outer nuclear layer thins above them."""
    x = np.arange(anatomy.width, dtype=np.float32)
    height = np.zeros(anatomy.width, np.float32)
    for _ in range(int(rng.integers(2, 8))):
        centre = _near_fovea(rng, anatomy, 0.16)
        half = rng.uniform(0.015, 0.04) * anatomy.width * (0.6 + 0.4 * strength)
        peak = rng.uniform(0.25, 0.75) * anatomy.thickness * 0.4 * strength
        height = np.maximum(height, peak * _dome(x, centre, half, rng.uniform(0.5, 0.9)))
    layers.thick[INDEX["SUBRPE"]] += height
    layers.refl[INDEX["SUBRPE"]] = 10 ** (rng.uniform(-22, -16) / 10)
    onl = INDEX["ONL"]  # the outer nuclear layer absorbs most of the elevation: the inner retina barely moves
    layers.thick[onl] = np.maximum(layers.thick[onl] - 0.8 * height, 0.2 * layers.thick[onl])


def add_cnv(rng: np.random.Generator, anatomy: Anatomy, layers: Layers, overlay: Overlay,
            strength: float = 1.0) -> None:
    """A neovascular lesion under the fovea: PED, bright SHRM, dark sub- and intra-retinal fluid, EZ loss."""
    x = np.arange(anatomy.width, dtype=np.float32)
    t = anatomy.thickness * strength
    centre = _near_fovea(rng, anatomy, 0.06)
    half = rng.uniform(0.06, 0.15) * anatomy.width * (0.6 + 0.4 * strength)
    bumpy = _wobble(rng, x, 24, 0.3)
    ped = rng.uniform(0.1, 0.4) * t * _dome(x, centre, half, 0.5) * bumpy
    layers.thick[INDEX["SUBRPE"]] += ped
    layers.refl[INDEX["SUBRPE"]] = 10 ** (rng.choice([-38.0, -20.0, -16.0]) / 10)  # serous or fibrovascular
    # the RPE over the lesion is wavy and thickened
    layers.thick[INDEX["RPE"]] *= 1 + 0.6 * _dome(x, centre, half) * (_wobble(rng, x, 70, 0.8) - 0.5)
    if rng.random() < 0.8:
        shrm = rng.uniform(0.12, 0.35) * t * _dome(x, centre + rng.normal(0, 0.3) * half, 0.9 * half, 0.4)
        layers.thick[INDEX["SHRM"]] += shrm * _wobble(rng, x, 48, 0.4)
        layers.refl[INDEX["SHRM"]] = 10 ** (rng.uniform(-7, -2) / 10) * _wobble(rng, x, 90, 0.5)
        for _ in range(int(rng.integers(3, 9))):  # streaky shadows under the bright material
            overlay.shadows.append((float(centre + rng.uniform(-0.8, 0.8) * half),
                                    float(rng.uniform(1.0, 4.0) * anatomy.width / 768), float(rng.uniform(0.3, 0.6))))
        bounds = layers.boundaries()
        for _ in range(int(rng.integers(4, 14))):  # speckled hyper-reflective dots inside the material
            fx = float(np.clip(centre + rng.normal(0, 0.5) * half, 0, anatomy.width - 1))
            col = int(fx)
            top, bottom = bounds[INDEX["SHRM"], col], bounds[INDEX["RPE"], col]
            if bottom - top > 2:
                overlay.foci.append((fx, float(rng.uniform(top, bottom)), rng.uniform(1.0, 2.5) * anatomy.width / 768,
                                     rng.uniform(0.1, 0.5)))
    if rng.random() < 0.75:
        srf_centre = centre + rng.normal(0, 0.6) * half
        srf_half = rng.uniform(0.5, 1.0) * half
        layers.thick[INDEX["SRF"]] += rng.uniform(0.1, 0.4) * t * _dome(x, srf_centre, srf_half, 0.5)
    # photoreceptor bands broken over the lesion, foveal pit filled in
    cover = _dome(x, centre, 1.2 * half)
    for name in ("EZ", "IZ", "ELM"):
        gaps = _wobble(rng, x, 60, 1.0) < 1.0
        layers.refl[INDEX[name]] *= 1 - 0.8 * cover * gaps
    layers.thick[INDEX["ONL"]] += 0.5 * layers.pit * anatomy.thickness * 0.3 * strength
    _cysts(rng, anatomy, layers, overlay, centre, half, int(rng.integers(0, 3)), strength)


def add_dme(rng: np.random.Generator, anatomy: Anatomy, layers: Layers, overlay: Overlay,
            strength: float = 1.0) -> None:
    """Diabetic macular oedema: thickened retina with several intraretinal cysts and hyper-reflective foci."""
    centre = _near_fovea(rng, anatomy, 0.05)
    half = rng.uniform(0.12, 0.22) * anatomy.width
    x = np.arange(anatomy.width, dtype=np.float32)
    swell = _dome(x, centre, half) * anatomy.thickness * rng.uniform(0.2, 0.5) * strength
    layers.thick[INDEX["INL"]] += 0.4 * swell
    layers.thick[INDEX["ONL"]] += 0.6 * swell
    if rng.random() < 0.3:
        layers.thick[INDEX["SRF"]] += 0.3 * swell * _dome(x, centre, 0.5 * half)
    _cysts(rng, anatomy, layers, overlay, centre, half, int(rng.integers(2, 7)), strength)
    bounds = layers.boundaries()
    for _ in range(int(rng.integers(2, 8))):
        fx = float(np.clip(centre + rng.normal(0, 0.6) * half, 0, anatomy.width - 1))
        col = int(fx)
        fy = rng.uniform(bounds[INDEX["INL"], col], bounds[INDEX["ELM"], col])
        overlay.foci.append((fx, float(fy), rng.uniform(1.0, 2.5) * anatomy.width / 768, rng.uniform(0.1, 0.4)))


def _cysts(rng: np.random.Generator, anatomy: Anatomy, layers: Layers, overlay: Overlay, centre: float,
           half: float, count: int, strength: float) -> None:
    """Dark intraretinal cysts in the INL/ONL; the host layer is thickened to make room for them."""
    x = np.arange(anatomy.width, dtype=np.float32)
    placed = []
    for _ in range(count):
        host = INDEX["ONL"] if rng.random() < 0.6 else INDEX["INL"]
        cx = float(np.clip(centre + rng.normal(0, 0.5) * half, 0.05 * anatomy.width, 0.95 * anatomy.width))
        ry = rng.uniform(0.06, 0.22) * anatomy.thickness * strength
        rx = ry * rng.uniform(0.8, 2.0) * anatomy.width / anatomy.height * 0.65
        layers.thick[host] += 2.1 * ry * _dome(x, cx, 2.5 * rx, 0.5)
        placed.append((host, cx, rx, ry))
    bounds = layers.boundaries()
    for host, cx, rx, ry in placed:
        col = int(cx)
        cy = (bounds[host, col] + bounds[host + 1, col]) / 2
        overlay.cysts.append((cx, float(cy), float(rx), float(ry), float(rng.uniform(0.85, 0.97))))


LESIONS = {"DRUSEN": add_drusen, "CNV": add_cnv, "DME": add_dme}
