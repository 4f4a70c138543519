"""Synthetic retinal OCT B-scans that look like Spectralis exports, written as an NEH-layout dataset.

Layers, foveal pit, speckle, vessel shadows and a burned-in scale bar; DRUSEN as RPE elevations, CNV as
fluid, hyper-reflective material and PED, DME as intraretinal cysts. Deterministic per seed.

Example:
    >>> import tempfile
    >>> from medkd.synth import write_synthetic_oct
    >>> write_synthetic_oct(tempfile.mkdtemp(), 3, image_size=(128, 96), scans_per_eye=(1, 1)).n_patients
    3
"""

from .bscan import render_bscan
from .writer import SYNTH_CLASSES, SynthSummary, write_synthetic_oct

__all__ = ["write_synthetic_oct", "SynthSummary", "SYNTH_CLASSES", "render_bscan"]
