"""Volume-level results as DICOM Structured Reports (TID 1500 Measurement Report, written with highdicom).

One SR per source series. Each volume (SOP instance) gets a measurement group that references it (and the frames
that were classified) and holds the probability of every class and the predicted class, with the model's name,
version and export hash as the algorithm identification. Patient and study identity are copied from the source
files by highdicom (they belong to the clinic's archive); nothing here logs them.

Example:
    >>> write_series_sr(results, model_info, "sr/")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from kdcore.errors import KDError

__all__ = ["VolumeResult", "ModelIdentity", "write_series_sr", "model_identity", "CODING_SCHEME", "probability_code",
           "PREDICTED_CLASS"]

CODING_SCHEME = "99KDVISION"  # private coding scheme of this package's class concepts


@dataclass(frozen=True)
class VolumeResult:
    """One DICOM source volume and its volume-level probabilities (``frames`` 0-based, as classified)."""

    path: str
    frames: Sequence[int]
    probabilities: np.ndarray  # (C,)
    aggregate: str


@dataclass(frozen=True)
class ModelIdentity:
    name: str
    version: str
    export_hash: str
    classes: Sequence[str]


def _concept(value: str, meaning: str):
    from highdicom.sr import CodedConcept

    return CodedConcept(value=value[:16], scheme_designator=CODING_SCHEME, meaning=meaning[:64])


def probability_code(index: int, name: str):
    """The measurement concept of ``P(class)``: ``("KDV-P<index>", 99KDVISION, "Probability of <class>")``."""
    return _concept(f"KDV-P{index}", f"Probability of {name}")


PREDICTED_CLASS = ("KDV-CLASS", "Predicted class")
# Patient and study attributes (type 2: present, possibly empty) that highdicom copies from the source.
_TYPE2_COPIED = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
                 "StudyDate", "StudyTime", "ReferringPhysicianName")


def write_series_sr(results: Sequence[VolumeResult], model: ModelIdentity, out_dir: str | os.PathLike,
                    series_number: int = 9001) -> list[Path]:
    """Write one SR per source series into ``out_dir`` (``SR_<source series UID>.dcm``); return the files."""
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    by_series: dict[str, list[tuple[Any, VolumeResult]]] = {}
    for result in results:
        source = pydicom.dcmread(result.path, stop_before_pixels=True)
        missing = [k for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
                   if not source.get(k)]
        if missing:
            raise KDError(f"{result.path}: no {', '.join(missing)}: an SR cannot reference this file")
        for keyword in _TYPE2_COPIED:  # required but may be empty: an export that left one out gets it empty
            if keyword not in source:
                setattr(source, keyword, "")
        by_series.setdefault(str(source.SeriesInstanceUID), []).append((source, result))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(), name=model.name[:64], manufacturer_name="kdvision", model_name=model.version[:64],
            serial_number=model.export_hash[:64]))
    algorithm = hd.sr.AlgorithmIdentification(name=model.name[:64], version=model.version[:64],
                                              parameters=[f"export sha256 {model.export_hash}"])
    written = []
    for series_uid, members in by_series.items():
        studies = {str(source.StudyInstanceUID) for source, _ in members}
        if len(studies) > 1:
            raise KDError(f"series {series_uid}: its files name {len(studies)} different studies")
        groups = []
        for number, (source, result) in enumerate(members, start=1):
            probs = np.asarray(result.probabilities, dtype=float)
            predicted = int(probs.argmax())
            groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=f"volume {number}"),
                algorithm_id=algorithm,
                measurements=[hd.sr.Measurement(name=probability_code(i, name), value=float(p),
                                                unit=codes.UCUM.NoUnits)
                              for i, (name, p) in enumerate(zip(model.classes, probs))],
                qualitative_evaluations=[hd.sr.QualitativeEvaluation(
                    name=_concept(*PREDICTED_CLASS),
                    value=_concept(f"KDV-C{predicted}", model.classes[predicted]))],
                source_images=[hd.sr.SourceImageForMeasurementGroup(
                    referenced_sop_class_uid=str(source.SOPClassUID),
                    referenced_sop_instance_uid=str(source.SOPInstanceUID),
                    referenced_frame_numbers=[int(f) + 1 for f in result.frames])]))
        report = hd.sr.MeasurementReport(
            observation_context=hd.sr.ObservationContext(observer_device_context=device),
            procedure_reported=codes.DCM.OpticalCoherenceTomography,
            imaging_measurements=groups, title=codes.DCM.ImagingMeasurementReport)
        sr = hd.sr.Comprehensive3DSR(
            evidence=[source for source, _ in members], content=report, series_instance_uid=generate_uid(),
            series_number=series_number, sop_instance_uid=generate_uid(), instance_number=1,
            manufacturer="kdvision", is_complete=True, series_description=f"kdvision {model.name}"[:64])
        target = out / f"SR_{series_uid}.dcm"
        tmp = target.with_name(target.name + ".tmp")
        sr.save_as(tmp, enforce_file_format=True)
        os.replace(tmp, target)  # an app watching the folder never sees half a file
        written.append(target)
    return written


def model_identity(contract: Mapping[str, Any], model_file: str | os.PathLike) -> ModelIdentity:
    """Name, version and export hash (SHA-256 of the model file that ran) of an export."""
    import hashlib

    from kdcore.export.runtime import package_versions

    source = contract.get("source") or {}
    name = f"{source.get('recipe') or 'kdvision'} {source.get('model') or contract.get('role') or 'model'} " \
           f"({contract.get('arch')})"
    commit = str(source.get("git_commit") or "")[:10]
    version = f"kdvision {package_versions(['kdvision']).get('kdvision') or 'dev'}" + \
              (f" {commit}" if commit else "") + f" fold {contract.get('fold')}"
    digest = hashlib.sha256(Path(model_file).read_bytes()).hexdigest()
    return ModelIdentity(name=name, version=version, export_hash=digest, classes=list(contract["classes"]))
