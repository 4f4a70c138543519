"""iBUG 300-W (68 points) in its public layout: one ``.pts`` beside each image.

``root/lfpw/{trainset,testset}``, ``root/helen/{trainset,testset}``, ``root/afw``, ``root/ibug``.
Splits follow the literature (HRNet, LAB, ...): ``train`` = LFPW train + HELEN train + AFW (3148 images),
``common`` = LFPW test + HELEN test (554), ``challenging`` = iBUG (135), ``full`` = common + challenging
(689), ``all`` = everything. 300-W has no identities: each image is its own subject. Record ids are the
image paths without suffix (``"helen/trainset/100032540_1"``), so their first part names the source.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from kdcore.errors import DataError

from .folder import find_pairs, scan_pairs
from .records import FaceRecord, ItemError

__all__ = ["N_POINTS", "SUBSET_DIRS", "SPLITS", "EXPECTED_IMAGES", "scan_300w"]

N_POINTS = 68
SUBSET_DIRS: dict[str, tuple[str, ...]] = {
    "train": ("lfpw/trainset", "helen/trainset", "afw"),
    "common": ("lfpw/testset", "helen/testset"),
    "challenging": ("ibug",),
}
SPLITS: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "common": ("common",),
    "challenging": ("challenging",),
    "full": ("common", "challenging"),
    "all": ("train", "common", "challenging"),
}
EXPECTED_IMAGES = {"train": 3148, "common": 554, "challenging": 135}  # counts of the public release


def scan_300w(root: str | Path, split: str | None = None, check_bounds: bool = True,
              ) -> Iterator[FaceRecord | ItemError]:
    """Yield the records of ``split`` (default ``"all"``) and an error per bad item or missing folder.

    Raises:
        DataError: ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder (expected the 300-W root with lfpw/, helen/, afw/, ibug/)")
    for subset in SPLITS[split or "all"]:
        for relative in SUBSET_DIRS[subset]:
            directory = root / relative
            if not directory.is_dir():
                yield ItemError("missing_file", str(directory), f"300-W folder missing (needed by subset {subset!r})")
                continue
            pairs, errors = find_pairs(directory, recursive=False, id_base=root)
            yield from errors
            yield from scan_pairs(pairs, root, N_POINTS, check_bounds,
                                  subsets={image: subset for image, _ in pairs})
