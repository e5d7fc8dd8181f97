"""Deterministic synthetic DICOM data for tests, benchmarks and ``drimbox bench``.

Every UID is derived from a seed under a test root, so two runs produce byte-identical files.
Patients are synthetic; no real identity is ever generated.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    SecondaryCaptureImageStorage,
)

__all__ = ["SyntheticStudy", "make_instance", "make_study", "synthetic_uid", "write_study"]

SYNTHETIC_UID_ROOT = "1.2.826.0.1.3680043.10.1337."
"""UID root of synthetic data (a test root; never used for real objects)."""

_SOP_CLASSES = {"CT": CTImageStorage, "MR": MRImageStorage, "OT": SecondaryCaptureImageStorage}


def synthetic_uid(*parts: object) -> UID:
    """Return a deterministic, valid UID derived from ``parts``.

    Parameters
    ----------
    *parts
        Anything with a stable ``str()``.

    Returns
    -------
    UID
        At most 64 characters, digits and dots only, no leading zero in any component.
    """
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    number = int.from_bytes(digest[:16], "big")
    return UID(SYNTHETIC_UID_ROOT + str(number)[: 64 - len(SYNTHETIC_UID_ROOT)])


@dataclass(frozen=True, slots=True)
class SyntheticStudy:
    """Parameters of a synthetic study.

    Attributes
    ----------
    seed
        Distinguishes studies; every UID derives from it.
    patient_id, patient_name
        Patient identity (synthetic).
    modality
        ``CT``, ``MR`` or ``OT``.
    series_count, instances_per_series
        Shape of the study.
    rows, columns
        Image size (16-bit monochrome pixels).
    accession_number, study_date
        Study attributes.
    """

    seed: str = "study-1"
    patient_id: str = "PAT001"
    patient_name: str = "SYNTHETIC^PATIENT"
    modality: str = "CT"
    series_count: int = 1
    instances_per_series: int = 10
    rows: int = 64
    columns: int = 64
    accession_number: str = "ACC001"
    study_date: str = "20240115"

    @property
    def study_instance_uid(self) -> UID:
        """The study's UID."""
        return synthetic_uid(self.seed, "study")

    def series_instance_uid(self, series: int) -> UID:
        """The UID of series number ``series`` (0-based)."""
        return synthetic_uid(self.seed, "series", series)

    def sop_instance_uid(self, series: int, instance: int) -> UID:
        """The UID of instance ``instance`` of series ``series`` (0-based)."""
        return synthetic_uid(self.seed, "instance", series, instance)


def make_instance(study: SyntheticStudy, series: int, instance: int) -> Dataset:
    """Build one instance of ``study`` as a pydicom data set with file meta information.

    Parameters
    ----------
    study
        The study parameters.
    series, instance
        0-based positions.

    Returns
    -------
    Dataset
        Explicit VR Little Endian, ready for ``dcmwrite(..., enforce_file_format=True)``.
    """
    sop_class = _SOP_CLASSES[study.modality]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = study.sop_instance_uid(series, instance)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = study.sop_instance_uid(series, instance)
    ds.StudyInstanceUID = study.study_instance_uid
    ds.SeriesInstanceUID = study.series_instance_uid(series)
    ds.PatientID = study.patient_id
    ds.PatientName = study.patient_name
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyDate = study.study_date
    ds.StudyTime = "101500"
    ds.SeriesDate = study.study_date
    ds.ContentDate = study.study_date
    ds.ContentTime = "101500"
    ds.AccessionNumber = study.accession_number
    ds.ReferringPhysicianName = "REFERRING^DOCTOR"
    ds.StudyID = "1"
    ds.StudyDescription = f"Synthetic {study.modality} study"
    ds.Modality = study.modality
    ds.SeriesNumber = series + 1
    ds.SeriesDescription = f"Series {series + 1}"
    ds.InstanceNumber = instance + 1
    ds.BodyPartExamined = "CHEST"
    ds.Manufacturer = "drimbox synthetic"
    ds.ImagePositionPatient = [0.0, 0.0, float(instance)]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [0.5, 0.5]
    ds.SliceThickness = 1.0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = study.rows
    ds.Columns = study.columns
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = 1024
    ds.WindowWidth = 2048
    if study.modality == "CT":
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.KVP = 120
    ds.PixelData = _pixels(study, series, instance).tobytes()
    return ds


def _pixels(study: SyntheticStudy, series: int, instance: int) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(f"{study.seed}/{series}/{instance}".encode()).digest()[:8])
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : study.rows, 0 : study.columns]
    centre_y, centre_x = study.rows / 2, study.columns / 2
    radius = min(study.rows, study.columns) * (0.3 + 0.1 * np.sin(instance / 7))
    disc = ((y - centre_y) ** 2 + (x - centre_x) ** 2) < radius**2
    image = np.where(disc, 1800, 400) + rng.integers(0, 200, size=(study.rows, study.columns))
    return image.astype("<u2")


def make_study(study: SyntheticStudy) -> Iterator[Dataset]:
    """Yield every instance of ``study``, series by series."""
    for series in range(study.series_count):
        for instance in range(study.instances_per_series):
            yield make_instance(study, series, instance)


def write_study(study: SyntheticStudy, directory: Path) -> list[Path]:
    """Write every instance of ``study`` as a Part 10 file under ``directory``.

    Returns
    -------
    list of Path
        The files written, in order.
    """
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for number, ds in enumerate(make_study(study)):
        path = directory / f"{study.seed}-{number:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
