"""Build DICOM Ophthalmic Tomography (OPT) test files with pydicom (not a test module).

The files carry what a device's export carries for our purposes: patient, study and series identity, laterality,
dates, manufacturer, one frame per B-scan (8-bit MONOCHROME2), optionally compressed (RLE, JPEG 2000).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (ExplicitVRLittleEndian, JPEG2000Lossless, PYDICOM_IMPLEMENTATION_UID, RLELossless,
                         generate_uid)

from kdcore.images import read_image

OPT = "1.2.840.10008.5.1.4.1.1.77.1.5.4"
REPO = Path(__file__).resolve().parents[2]
REAL = REPO.parent / "shared" / "fixtures" / "oct2017-real"


def real_or_synthetic_bscans(n: int, start: int = 0, size: tuple[int, int] = (124, 192)) -> list[np.ndarray]:
    """``n`` B-scans of one size: the real OCT2017 B-scans ``start, start+1, ...`` (resized, cycling through the
    32) where the shared fixtures exist, else noise; different ``start`` ranges give different B-scans."""
    import cv2

    files = sorted(REAL.glob("*/*.jpeg"))
    if files:
        chosen = [files[(start + i) % len(files)] for i in range(n)]
        return [cv2.resize(read_image(f, "gray"), size[::-1], interpolation=cv2.INTER_AREA) for f in chosen]
    rng = np.random.default_rng(start)
    return [rng.integers(0, 256, size=size, dtype=np.uint8) for _ in range(n)]


def write_opt(path: Path, frames: Sequence[np.ndarray], patient_id: str = "PAT-001", laterality: str = "R",
              study_date: str = "20240312", study_uid: str | None = None, series_uid: str | None = None,
              compression: str | None = None, patient_name: str = "Doe^Jane", sop_class: str = OPT) -> Dataset:
    """Write a multi-frame OPT file; ``compression`` is ``None``, ``"rle"`` or ``"jpeg2000"``. Returns the dataset."""
    pixels = np.ascontiguousarray(np.stack(frames).astype(np.uint8))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.PatientSex = patient_id, patient_name, "19500101", "F"
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "ACC1", ""
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "101500"
    ds.AcquisitionDateTime = study_date + "101500"
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "OPT", 1, 1
    ds.Manufacturer, ds.ManufacturerModelName = "Heidelberg Engineering", "Spectralis"
    ds.ImageLaterality, ds.Laterality = laterality, laterality
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.NumberOfFrames = len(pixels)
    ds.Rows, ds.Columns = pixels.shape[1:]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = pixels.tobytes()
    if compression == "rle":
        ds.compress(RLELossless, pixels)
    elif compression == "jpeg2000":
        ds.compress(JPEG2000Lossless, pixels)
    elif compression is not None:
        raise ValueError(compression)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return ds
