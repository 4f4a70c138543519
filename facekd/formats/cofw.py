"""COFW (29 points with occlusion flags): images and annotations inside two MATLAB files.

``root/COFW_train_color.mat`` (variables ``IsTr``, ``phisTr``, ``bboxesTr``) and ``root/COFW_test_color.mat``
(``IsT``, ``phisT``, ``bboxesT``). ``Is*`` is an N x 1 cell of uint8 images (H x W x 3 or grey H x W);
``phis*`` is N x 87: 29 x, 29 y (1-based Matlab pixels) and 29 occlusion flags (1 = hidden);
``bboxes*`` is N x 4 ``x y w h`` (1-based). The public train file is MATLAB v7.3 (HDF5: the cell is an array
of object references, every array stored transposed) and the test file classic v5; either version is
accepted for either file. COFW has no identities: each image is its own subject.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import cv2
import h5py
import numpy as np
import scipy.io

from kdcore.errors import DataError

from .records import FaceRecord, ItemError, check_landmarks

__all__ = ["N_POINTS", "FILES", "SPLITS", "EXPECTED_FACES", "MatFaces", "open_mat", "read_cofw_image",
           "close_mat_files", "scan_cofw"]

N_POINTS = 29
FILES = {"train": "COFW_train_color.mat", "test": "COFW_test_color.mat"}
SPLITS = ("train", "test", "all")
EXPECTED_FACES = {"train": 1345, "test": 507}
_VARIABLES = (("IsTr", "phisTr", "bboxesTr"), ("IsT", "phisT", "bboxesT"))


def _pick_variables(keys: list[str], path: Path) -> tuple[str, str, str]:
    for names in _VARIABLES:
        if names[0] in keys and names[1] in keys:
            return names
    raise DataError(f"{path}: no COFW variables (expected IsTr/phisTr/bboxesTr or IsT/phisT/bboxesT), "
                    f"found {sorted(k for k in keys if not k.startswith('#'))}")


class MatFaces:
    """Read access to the images and annotations of one COFW ``.mat`` file (either MATLAB version)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"{self.path}: COFW file not found")
        self.hdf5 = h5py.is_hdf5(self.path)
        try:
            self._open_hdf5() if self.hdf5 else self._open_v5()
            self._check_shapes()
        except DataError:
            self.close()
            raise
        except (OSError, ValueError, NotImplementedError, KeyError, TypeError, IndexError,
                scipy.io.matlab.MatReadError) as exc:  # a file of a few bytes fails inside scipy's header parser
            self.close()
            raise DataError(f"{self.path}: cannot read this MATLAB file ({exc or type(exc).__name__}; "
                            f"{self.path.stat().st_size} bytes)") from None

    def _check_shapes(self) -> None:
        n = len(self._images)
        if self.phis.ndim != 2 or self.phis.shape[0] != n or self.phis.shape[1] not in (2 * N_POINTS, 3 * N_POINTS):
            raise DataError(f"{self.path}: {self.names[1]} has shape {self.phis.shape}, expected ({n}, "
                            f"{3 * N_POINTS}) (29 x, 29 y, 29 occlusion flags) for {n} images")
        if self.bboxes is not None and self.bboxes.shape != (n, 4):
            raise DataError(f"{self.path}: {self.names[2]} has shape {self.bboxes.shape}, expected ({n}, 4)")

    def _open_hdf5(self) -> None:
        self._file = h5py.File(self.path, "r")
        self.names = _pick_variables(list(self._file.keys()), self.path)
        cell = self._file[self.names[0]]
        if h5py.check_dtype(ref=cell.dtype) is not h5py.Reference:
            raise DataError(f"{self.path}: {self.names[0]} is not a cell array of images (dtype {cell.dtype})")
        self._images = np.asarray(cell).ravel()  # MATLAB N x 1 cell -> HDF5 1 x N references
        self.phis = np.asarray(self._file[self.names[1]], dtype=np.float64).T
        self.bboxes = (np.asarray(self._file[self.names[2]], dtype=np.float64).T
                       if self.names[2] in self._file else None)

    def _open_v5(self) -> None:
        contents = scipy.io.loadmat(self.path)
        self.names = _pick_variables(list(contents), self.path)
        cell = contents[self.names[0]]
        if cell.dtype != object:
            raise DataError(f"{self.path}: {self.names[0]} is not a cell array of images (dtype {cell.dtype})")
        self._images = cell.ravel()
        self.phis = np.asarray(contents[self.names[1]], dtype=np.float64)
        self.bboxes = np.asarray(contents[self.names[2]], dtype=np.float64) if self.names[2] in contents else None

    def __len__(self) -> int:
        return len(self._images)

    def where(self, index: int) -> str:
        return f"{self.path}:{self.names[0]}{{{index + 1}}}"

    def image_shape(self, index: int) -> tuple[int, ...]:
        """``(H, W)`` or ``(H, W, C)`` without reading the pixels (HDF5) or from memory (v5)."""
        if self.hdf5:
            return tuple(reversed(self._file[self._images[index]].shape))
        return np.shape(self._images[index])

    def image(self, index: int) -> np.ndarray:
        """The image as RGB uint8 ``(H, W, 3)``; grey images are repeated over the channels."""
        where = self.where(index)
        try:
            data = np.asarray(self._file[self._images[index]]).T if self.hdf5 else np.asarray(self._images[index])
        except (OSError, ValueError, KeyError) as exc:
            raise DataError(f"{where}: cannot read the image ({exc})") from None
        if data.dtype != np.uint8:
            raise DataError(f"{where}: image has dtype {data.dtype}, expected uint8")
        if data.ndim == 2:
            return cv2.cvtColor(np.ascontiguousarray(data), cv2.COLOR_GRAY2RGB)
        if data.ndim == 3 and data.shape[2] == 3:
            return np.ascontiguousarray(data)
        raise DataError(f"{where}: image has shape {data.shape}, expected (H, W) or (H, W, 3)")

    def close(self) -> None:
        if getattr(self, "_file", None) is not None:
            self._file.close()


_OPEN: dict[tuple, MatFaces] = {}


def open_mat(path: str | os.PathLike) -> MatFaces:
    """A cached :class:`MatFaces`, reopened after a fork (DataLoader workers) or when the file changed."""
    path = Path(path).resolve()
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise DataError(f"{path}: COFW file not found") from None
    key = (str(path), os.getpid(), stat.st_mtime_ns, stat.st_size)
    if key not in _OPEN:
        for stale in [k for k in _OPEN if k[:2] == key[:2]]:  # the file changed since it was opened
            _OPEN.pop(stale).close()
        _OPEN[key] = MatFaces(path)
    return _OPEN[key]


def read_cofw_image(path: str | os.PathLike, index: int) -> np.ndarray:
    """RGB uint8 image number ``index`` (0-based) of a COFW ``.mat`` file."""
    return open_mat(path).image(index)


def close_mat_files() -> None:
    """Close the cached files opened by this process."""
    for key in [k for k in _OPEN if k[1] == os.getpid()]:
        _OPEN.pop(key).close()


def _row_to_record(mat: MatFaces, index: int, part: str, check_bounds: bool) -> FaceRecord | ItemError:
    record_id = f"{part}/{index + 1:04d}"
    where = f"{mat.path}:{mat.names[1]}(row {index + 1})"
    row = mat.phis[index]
    landmarks = np.stack([row[:N_POINTS], row[N_POINTS:2 * N_POINTS]], axis=1) - 1.0  # 1-based Matlab pixels
    occluded = None
    if len(row) == 3 * N_POINTS:
        flags = row[2 * N_POINTS:]
        if not np.isin(flags, (0.0, 1.0)).all():
            bad = flags[~np.isin(flags, (0.0, 1.0))][0]
            return ItemError("bad_annotation", where, f"occlusion flags must be 0 or 1, found {bad!r}", record_id)
        occluded = flags.astype(bool)
    shape = mat.image_shape(index)
    if len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] != 3):
        return ItemError("unreadable_image", mat.where(index), f"image has shape {shape}, expected (H, W) or "
                         "(H, W, 3)", record_id)
    problem = check_landmarks(landmarks, (shape[1], shape[0]) if check_bounds else None)
    if problem:
        return ItemError("bad_landmarks", where, problem, record_id)
    box = None
    if mat.bboxes is not None:
        x, y, w, h = mat.bboxes[index]
        if not (np.isfinite([x, y, w, h]).all() and w > 0 and h > 0):
            return ItemError("bad_annotation", f"{mat.path}:{mat.names[2]}(row {index + 1})",
                             f"box x y w h = {(x, y, w, h)} is not finite with positive size", record_id)
        box = (x - 1.0, y - 1.0, x - 1.0 + w, y - 1.0 + h)
    return FaceRecord(record_id, mat.path, landmarks, subject=record_id, box=box, subset=part,
                      occluded=occluded, image_index=index)


def scan_cofw(root: str | Path, split: str | None = None, check_bounds: bool = True,
              ) -> Iterator[FaceRecord | ItemError]:
    """Yield the faces of ``split`` (``train``, ``test`` or ``all``) from the ``.mat`` files in ``root``.

    Raises:
        DataError: ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder (expected the folder with {FILES['train']} and {FILES['test']})")
    split = split or "all"
    for part in (("train", "test") if split == "all" else (split,)):
        path = root / FILES[part]
        if not path.is_file():
            yield ItemError("missing_file", str(path), "COFW file not found")
            continue
        try:
            mat = open_mat(path)
        except DataError as exc:
            yield ItemError("bad_annotation", str(path), str(exc).removeprefix(f"{path.resolve()}: "))
            continue
        for index in range(len(mat)):
            yield _row_to_record(mat, index, part, check_bounds)
