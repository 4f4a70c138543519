"""Retinal anatomy of a synthetic B-scan: layer thicknesses per column, stacked up from Bruch's membrane.

A B-scan is described by a :class:`Layers` stack (top to bottom) of per-column thicknesses and reflectivities.
Lesions edit the stack (a druse is a thicker sub-RPE layer, fluid a thicker sub-retinal layer), and stacking
from Bruch's membrane upwards lifts the retina over them as in real eyes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["LAYERS", "INDEX", "Anatomy", "ScanGeometry", "Layers", "sample_anatomy", "scan_geometry", "build_layers"]

# (name, thickness as a fraction of the peripheral retinal thickness, reflectivity in dB below the RPE,
# foveal keep factor). Values follow Spectralis B-scans (e.g. the OCT2017 samples): NFL about 17 dB under the
# RPE, nuclear layers darkest, EZ and interdigitation zone bright; inner layers thin out in the foveal pit.
LAYERS = (
    ("NFL", 0.07, -15.0, 0.0),
    ("GCL", 0.13, -22.0, 0.0),
    ("IPL", 0.10, -19.5, 0.0),
    ("INL", 0.10, -24.0, 0.08),
    ("OPL", 0.07, -19.5, 0.15),
    ("ONL", 0.25, -25.5, 1.3),
    ("ELM", 0.012, -19.0, 1.0),
    ("IS", 0.05, -24.0, 1.1),
    ("EZ", 0.03, -6.0, 1.0),
    ("OS", 0.035, -17.0, 1.1),
    ("IZ", 0.02, -8.0, 1.0),
    ("SRF", 0.0, -40.0, 1.0),  # sub-retinal fluid: zero thickness unless a lesion fills it
    ("SHRM", 0.0, -9.0, 1.0),  # sub-retinal hyper-reflective material (CNV)
    ("RPE", 0.06, 0.0, 1.0),
    ("SUBRPE", 0.0, -19.0, 1.0),  # drusen / pigment epithelial detachment content
)
INDEX = {name: i for i, (name, *_rest) in enumerate(LAYERS)}


@dataclass(frozen=True)
class Anatomy:
    """One eye's shape and one scanner's rendering settings (all lengths in pixels of the output image)."""

    height: int
    width: int
    bruch_row: float  # Bruch's membrane at the image centre
    tilt: float  # row change from left to right edge
    curvature: float  # how much higher the edges sit than the centre
    thickness: float  # peripheral ILM-to-Bruch thickness
    fovea_x: float  # column of the foveal pit (volume centre)
    pit_width: float  # Gaussian width of the pit in columns
    pit_depth: float  # fraction of the inner retina removed at the pit centre
    nfl_side: float  # +1 / -1: side of the optic disc (NFL thickens towards it); mirrored between OD and OS
    choroid_depth: float  # attenuation length below Bruch's membrane
    vessels: tuple[tuple[float, float, float], ...]  # (column, width, shadow strength) of retinal vessels
    gain_db: float
    floor_db: float  # noise floor relative to the RPE
    speckle_looks: float  # gamma shape of the multiplicative speckle (more looks = smoother; frames averaged)
    display_db: float  # dB range mapped to 0..255
    texture: float  # amplitude of the lateral layer texture
    blur: float  # optical blur sigma in pixels
    hyaloid: float  # strength of a detached posterior hyaloid line (0 = none)


@dataclass(frozen=True)
class ScanGeometry:
    """Where one B-scan sits in its volume and the small motion jitter of that acquisition."""

    position: float  # -1..1 across the volume; 0 goes through the fovea
    shift: float  # vertical offset in pixels
    tilt: float  # extra tilt in pixels
    gain_db: float


def sample_anatomy(rng: np.random.Generator, width: int, height: int, eye: str, variation: float = 1.0,
                   noise: float = 1.0) -> Anatomy:
    """Draw one eye; ``variation`` scales between-eye spread, ``noise`` the noise floor and speckle."""
    v = float(variation)

    def spread(lo: float, hi: float) -> float:
        mid = (lo + hi) / 2
        return mid + (rng.uniform(lo, hi) - mid) * v

    thickness = spread(0.15, 0.20) * height
    n_vessels = int(rng.integers(3, 8))
    vessels = tuple((float(rng.uniform(0.03, 0.97) * width), float(rng.uniform(1.0, 3.0) * width / 768),
                     float(rng.uniform(0.3, 0.7))) for _ in range(n_vessels))
    return Anatomy(
        height=height, width=width,
        bruch_row=spread(0.48, 0.62) * height,
        tilt=spread(-0.12, 0.12) * height,
        curvature=spread(-0.02, 0.12) * height,
        thickness=thickness,
        fovea_x=(0.5 + spread(-0.08, 0.08)) * width,
        pit_width=spread(0.045, 0.075) * width,
        pit_depth=spread(0.75, 0.95),
        nfl_side=1.0 if eye == "OD" else -1.0,
        choroid_depth=spread(0.04, 0.06) * height,
        vessels=vessels,
        gain_db=spread(-1.5, 1.5),
        floor_db=-29.0 + 2.0 * np.log2(max(noise, 1e-3)) + spread(-1.0, 1.0),
        speckle_looks=float(np.clip(spread(1.2, 2.5) / max(noise, 1e-3) ** 2, 0.7, 100.0)),
        display_db=spread(36.0, 44.0),
        texture=spread(0.15, 0.35),
        blur=spread(0.4, 0.8) * width / 768,
        hyaloid=float(rng.uniform(0.04, 0.12)) if rng.random() < 0.25 else 0.0,
    )


def scan_geometry(rng: np.random.Generator, position: float, height: int) -> ScanGeometry:
    return ScanGeometry(position=position, shift=float(rng.normal(0, 0.012) * height),
                        tilt=float(rng.normal(0, 0.01) * height), gain_db=float(rng.normal(0, 0.4)))


@dataclass
class Layers:
    """Per-column thickness (``thick[i]``) and reflectivity (``refl[i]``) of every layer in :data:`LAYERS`."""

    thick: np.ndarray  # (n_layers, width) pixels
    refl: np.ndarray  # (n_layers, width) linear reflectivity
    bruch: np.ndarray  # (width,) row of Bruch's membrane
    pit: np.ndarray  # (width,) 0..1 foveal pit profile (1 = centre)

    def boundaries(self) -> np.ndarray:
        """Top row of every layer plus Bruch's membrane: ``(n_layers + 1, width)``, stacked upwards."""
        bottoms = self.bruch[None, :] - np.cumsum(self.thick[::-1], axis=0)[::-1]
        return np.concatenate([bottoms, self.bruch[None, :]], axis=0)

    def top_of(self, name: str) -> np.ndarray:
        return self.boundaries()[INDEX[name]]


def build_layers(anatomy: Anatomy, scan: ScanGeometry) -> Layers:
    """The healthy layer stack of one B-scan through ``anatomy`` at ``scan.position``."""
    w = anatomy.width
    x = np.arange(w, dtype=np.float32)
    u = (x - w / 2) / w
    bruch = (anatomy.bruch_row + scan.shift + (anatomy.tilt + scan.tilt) * u
             - anatomy.curvature * (4 * u * u - 1 / 3)).astype(np.float32)
    # off-centre slices of the volume cut the pit's flank: shallower and wider
    centrality = float(np.exp(-(scan.position / 0.45) ** 2))
    d = (x - anatomy.fovea_x) / (anatomy.pit_width * (1 + 0.6 * (1 - centrality)))
    pit = (np.exp(-0.5 * d * d) * anatomy.pit_depth * centrality).astype(np.float32)
    rim = (1 + 0.12 * np.exp(-0.5 * ((np.abs(d) - 2.2) / 0.9) ** 2) * centrality).astype(np.float32)
    disc_side = np.clip(anatomy.nfl_side * (x - anatomy.fovea_x) / w, 0, None)

    n = len(LAYERS)
    thick = np.empty((n, w), np.float32)
    refl = np.empty((n, w), np.float32)
    for i, (name, frac, r, keep) in enumerate(LAYERS):
        t = frac * anatomy.thickness * rim
        if name == "NFL":
            t = t * (1 + 4.0 * disc_side)
        thick[i] = t * (1 - pit * (1 - keep))
        refl[i] = 10 ** (r / 10)
    return Layers(thick=thick, refl=refl, bruch=bruch, pit=pit)
