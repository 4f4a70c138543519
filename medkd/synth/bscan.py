"""One synthetic B-scan: anatomy + lesions -> reflectivity -> speckled 8-bit image with a scale bar."""

from __future__ import annotations

import numpy as np

from .anatomy import Anatomy, build_layers, scan_geometry
from .lesions import LESIONS
from .render import Overlay, draw_scale_bar, reflectivity, to_uint8

__all__ = ["render_bscan"]


def render_bscan(rng: np.random.Generator, anatomy: Anatomy, position: float, lesions: tuple[str, ...] = (),
                 strength: float = 1.0, scale_bar: bool = True) -> np.ndarray:
    """A B-scan at volume ``position`` (-1..1) with the named ``lesions`` (keys of ``LESIONS``).

    Returns ``(H, W, 3)`` BGR uint8 (greyscale stored as colour with a coloured scale bar, like NEH) when
    ``scale_bar`` is true, else ``(H, W)`` greyscale.

    Example:
        >>> import numpy as np
        >>> from medkd.synth.anatomy import sample_anatomy
        >>> rng = np.random.default_rng(0)
        >>> render_bscan(rng, sample_anatomy(rng, 96, 64, "OD"), 0.0, ("DRUSEN",)).shape
        (64, 96, 3)
    """
    # separate streams: the same rng state gives the same geometry and noise with or without lesions
    geometry_rng, lesion_rng, noise_rng = (np.random.default_rng(s) for s in rng.integers(0, 2**63, 3))
    scan = scan_geometry(geometry_rng, position, anatomy.height)
    layers = build_layers(anatomy, scan)
    overlay = Overlay()
    for name in lesions:
        LESIONS[name](lesion_rng, anatomy, layers, overlay, strength)
    image = to_uint8(noise_rng, reflectivity(noise_rng, anatomy, layers, overlay), anatomy, scan.gain_db)
    return draw_scale_bar(image) if scale_bar else image
