"""OCT datasets: the NEH, OCT2017, manifest and volume (DICOM OPT, vendor exports) formats, loaded into
:class:`OCTDataset` records (no decoding).

Example:
    >>> from medkd.data import load_oct_dataset               # doctest: +SKIP
    >>> ds = load_oct_dataset("data/neh", "neh")              # doctest: +SKIP
"""

from .load import FORMATS, load_oct_dataset, scan_oct_dataset
from .manifest import load_manifest
from .neh import NEH_CLASSES, load_neh
from .oct2017 import OCT2017_CLASSES, load_oct2017, official_split, train_test_overlap
from .records import OCTDataset, OCTRecord, Problem
from .volume_scan import VolumeOptions, load_volumes

__all__ = [
    "OCTRecord", "OCTDataset", "Problem", "FORMATS", "load_oct_dataset", "scan_oct_dataset",
    "load_neh", "load_oct2017", "load_manifest", "official_split", "train_test_overlap",
    "NEH_CLASSES", "OCT2017_CLASSES", "VolumeOptions", "load_volumes",
]
