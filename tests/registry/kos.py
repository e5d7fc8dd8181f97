"""Test data for the registry: real KOS manifests built with pydicom, and valid submissions."""

from __future__ import annotations

import itertools
from datetime import date
from io import BytesIO

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from registry._ins import INS_NIR_TEST_OID, ins_check_key
from registry.models import Coding, ManifestSubmission, Party

__all__ = [
    "CT_SOP_CLASS",
    "KOS_SOP_CLASS",
    "SAMPLE_INS",
    "build_kos",
    "make_ins",
    "make_manifest",
]

#: PS3.4 §B.5 Key Object Selection Document Storage; CT Image Storage.
KOS_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.88.59"
CT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.2"
#: The test INS-NIR of the ANS DRIMbox samples (PAT-TROIS Dominique, CR_*.xml).
SAMPLE_INS = "279035121518989"
_serials = itertools.count(1)


def make_ins(serial: int, *, corsica: str | None = None) -> str:
    """Return a valid 15-character NIR for a serial number (department 2A/2B if asked)."""
    department = corsica or "75"
    body = f"18505{department}{serial % 10**6:06d}"
    return body + f"{ins_check_key(body):02d}"


def build_kos(
    kos_uid: str,
    study_uid: str,
    *,
    patient_id: str = SAMPLE_INS,
    instances: int = 3,
) -> bytes:
    """Return a PS3.10 Key Object Selection Document referencing ``instances`` CT images."""
    series_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(KOS_SOP_CLASS)
    meta.MediaStorageSOPInstanceUID = UID(kos_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = KOS_SOP_CLASS
    ds.SOPInstanceUID = kos_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "KO"
    ds.PatientID = patient_id
    ds.PatientName = "TEST^KOS"
    ds.StudyDate = "20240115"
    ds.StudyTime = "115500"
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = ""
    ds.AccessionNumber = ""
    ds.Manufacturer = ""
    ds.ReferencedPerformedProcedureStepSequence = Sequence([])
    ds.ContentDate = "20240115"
    ds.ContentTime = "120000"
    ds.SeriesNumber = 99
    ds.InstanceNumber = 1
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    title = Dataset()
    title.CodeValue, title.CodingSchemeDesignator, title.CodeMeaning = "113030", "DCM", "Manifest"
    ds.ConceptNameCodeSequence = Sequence([title])
    sops = []
    content = []
    for _ in range(instances):
        sop = Dataset()
        sop.ReferencedSOPClassUID = CT_SOP_CLASS
        sop.ReferencedSOPInstanceUID = generate_uid()
        sops.append(sop)
        item = Dataset()
        item.RelationshipType, item.ValueType = "CONTAINS", "IMAGE"
        item.ReferencedSOPSequence = Sequence([sop])
        content.append(item)
    series = Dataset()
    series.SeriesInstanceUID = series_uid
    series.ReferencedSOPSequence = Sequence(sops)
    study = Dataset()
    study.StudyInstanceUID = study_uid
    study.ReferencedSeriesSequence = Sequence([series])
    ds.CurrentRequestedProcedureEvidenceSequence = Sequence([study])
    ds.ContentSequence = Sequence(content)
    buffer = BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def make_manifest(**overrides: object) -> tuple[ManifestSubmission, bytes]:
    """Return a valid submission (test INS, CT head) and its KOS; ``overrides`` change fields."""
    kos_uid = str(overrides.pop("kos_sop_instance_uid", generate_uid()))
    study_uid = str(overrides.pop("study_instance_uid", generate_uid()))
    values: dict[str, object] = {
        "patient_value": SAMPLE_INS,
        "patient_oid": INS_NIR_TEST_OID,
        "kos_sop_instance_uid": kos_uid,
        "study_instance_uid": study_uid,
        "source_box_id": "box-a",
        "period_start": date(2024, 1, 15),
        "accession_number": f"ACN{next(_serials)}",
        "accession_system": "urn:oid:1.2.250.1.213.4.5.2.5",
        "modalities": ("CT",),
        "regions": (Coding("http://snomed.info/sct", "69536005", "Head"),),
        "author": Party("urn:oid:1.2.250.1.71.4.2.1", "810000000001", "Dr Test"),
        "custodian": Party("urn:oid:1.2.250.1.71.4.2.2", "1750803447", "Centre Ambroise"),
        "title": "CT head",
    }
    values.update(overrides)
    manifest = ManifestSubmission(**values)  # type: ignore[arg-type]
    return manifest, build_kos(kos_uid, study_uid, patient_id=manifest.patient_value)
