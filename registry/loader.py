"""Deterministic synthetic load for the registry: N manifests with real KOS bytes, batched.

The same ``(count, seed)`` always gives the same entries (ids, patients, dates, UIDs), so a
benchmark or a test can be reproduced. Distribution, after French volumes (about 80 M imaging
exams a year for 68 M people): on average :data:`ENTRIES_PER_PATIENT` manifests per patient
over ten years, unevenly spread; 2 % masked; modalities drawn from the common ones.

Each KOS is a real PS3.10 Key Object Selection Document built once with pydicom as a template
whose UIDs all have the same length, then copied with the UIDs of each entry substituted.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from io import BytesIO

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian

from registry._ins import INS_NIR_OID, ins_check_key
from registry.models import Coding, ManifestSubmission, Party
from registry.service.store import RegistryStore, entry_row

__all__ = [
    "ENTRIES_PER_PATIENT",
    "SyntheticKos",
    "load_synthetic_entries",
    "synthetic_entries",
    "synthetic_patient",
]

#: Average manifests per patient in the synthetic population.
ENTRIES_PER_PATIENT = 10
#: PS3.4 §B.5 Key Object Selection Document Storage; CT Image Storage (the referenced images).
_KOS_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.88.59"
_CT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.2"
#: UUID-derived UIDs (PS3.5 §B.2: ``2.25.<integer>``), all of 44 characters (even: no padding).
_UID_BASE = 10**38
_ROLES = 16  # UIDs per entry: KOS, study, KOS series, referenced series, instances...
_MODALITIES = ("CT", "MR", "US", "CR", "DX", "MG", "NM", "PT", "XA")
_SNOMED = "http://snomed.info/sct"
_REGIONS = (
    Coding(_SNOMED, "69536005", "Head"),
    Coding(_SNOMED, "51185008", "Thorax"),
    Coding(_SNOMED, "818983003", "Abdomen"),
    Coding(_SNOMED, "72696002", "Knee"),
)
_FIRST_DAY = date(2016, 1, 1)
_DAYS = 3650
_MASKED_PERCENT = 2
#: RFC 9562 §4.1-4.2: version (bits 48-51) and variant (bits 64-65) of a random UUID.
_UUID_VERSION_MASK = 0xF000 << 64
_UUID_VERSION_4 = 0x4000 << 64
_UUID_VARIANT_MASK = 0xC000 << 48
_UUID_VARIANT_RFC4122 = 0x8000 << 48


def _uid(seed: int, index: int, role: int) -> str:
    return f"2.25.{_UID_BASE + seed * 10**30 + index * _ROLES + role}"


def synthetic_patient(index: int) -> tuple[str, str]:
    """Return the (INS OID, INS) of synthetic patient ``index`` (a valid production NIR)."""
    body = f"{1 + index % 2}{(index // 10**6) % 100:02d}0175{index % 10**6:06d}"
    return INS_NIR_OID, body + f"{ins_check_key(body):02d}"


@dataclass(frozen=True, slots=True)
class SyntheticKos:
    """A KOS template with placeholder UIDs, copied per entry by substitution.

    Parameters
    ----------
    instances
        Images referenced per KOS (about 100 bytes each in the file).
    """

    instances: int = 4

    def template(self) -> bytes:
        """Return the template: a valid KOS whose UIDs are those of entry 0, seed 0."""
        kos_uid, study_uid, series_uid, referenced_series = (_uid(0, 0, r) for r in range(4))
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = UID(_KOS_SOP_CLASS)
        meta.MediaStorageSOPInstanceUID = UID(kos_uid)
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = _KOS_SOP_CLASS, kos_uid
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "KO", 99, 1
        ds.PatientName, ds.PatientID = "SYNTHETIC^PATIENT", "000000000000000"
        ds.PatientBirthDate = ds.PatientSex = ds.ReferringPhysicianName = ds.StudyID = ""
        ds.AccessionNumber = ds.Manufacturer = ""
        ds.StudyDate = ds.ContentDate = "20240101"
        ds.StudyTime = ds.ContentTime = "120000"
        ds.ValueType, ds.ContinuityOfContent = "CONTAINER", "SEPARATE"
        ds.ReferencedPerformedProcedureStepSequence = Sequence([])
        title = Dataset()
        title.CodeValue, title.CodingSchemeDesignator, title.CodeMeaning = (
            "113030",
            "DCM",
            "Manifest",
        )
        ds.ConceptNameCodeSequence = Sequence([title])
        sops, content = [], []
        for number in range(self.instances):
            sop = Dataset()
            sop.ReferencedSOPClassUID = _CT_SOP_CLASS
            sop.ReferencedSOPInstanceUID = _uid(0, 0, 4 + number % (_ROLES - 4))
            sops.append(sop)
            item = Dataset()
            item.RelationshipType, item.ValueType = "CONTAINS", "IMAGE"
            item.ReferencedSOPSequence = Sequence([sop])
            content.append(item)
        series = Dataset()
        series.SeriesInstanceUID = referenced_series
        series.ReferencedSOPSequence = Sequence(sops)
        study = Dataset()
        study.StudyInstanceUID = study_uid
        study.ReferencedSeriesSequence = Sequence([series])
        ds.CurrentRequestedProcedureEvidenceSequence = Sequence([study])
        ds.ContentSequence = Sequence(content)
        buffer = BytesIO()
        dcmwrite(buffer, ds, enforce_file_format=True)
        return buffer.getvalue()


def _kos_format(template: bytes, roles: int) -> tuple[bytes, list[int]]:
    """Return the template as a ``bytes % tuple`` format and the role of each ``%s``, in order."""
    placeholders = {_uid(0, 0, role).encode(): role for role in range(roles)}
    pattern = re.compile(b"(" + b"|".join(re.escape(p) for p in placeholders) + b")")
    parts = pattern.split(template)
    literal = [part.replace(b"%", b"%%") for part in parts[::2]]
    return b"%s".join(literal), [placeholders[part] for part in parts[1::2]]


def _uuid4_text(bits: int) -> str:
    """Return ``str(uuid.UUID(int=bits, version=4))``, without building the UUID object."""
    bits = (bits & ~_UUID_VERSION_MASK) | _UUID_VERSION_4
    bits = (bits & ~_UUID_VARIANT_MASK) | _UUID_VARIANT_RFC4122
    text = f"{bits:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def synthetic_entries(
    count: int, *, seed: int = 0, instances: int = 4
) -> Iterator[tuple[ManifestSubmission, bytes, str]]:
    """Yield ``count`` deterministic (manifest, KOS bytes, entry id) triples."""
    roles = min(_ROLES, 4 + instances)
    kos_format, order = _kos_format(SyntheticKos(instances).template(), roles)
    rng = random.Random(seed)
    patients = max(1, count // ENTRIES_PER_PATIENT)
    seed_base = _UID_BASE + seed * 10**30
    for index in range(count):
        base = seed_base + index * _ROLES
        uids = [f"2.25.{base + role}" for role in range(roles)]
        encoded = [uid.encode() for uid in uids]
        kos = kos_format % tuple([encoded[role] for role in order])
        oid, ins = synthetic_patient(int(patients * rng.random() ** 1.5))  # some patients: many
        start = _FIRST_DAY + timedelta(days=rng.randrange(_DAYS))
        manifest = ManifestSubmission(
            patient_value=ins,
            patient_oid=oid,
            kos_sop_instance_uid=uids[0],
            study_instance_uid=uids[1],
            source_box_id=f"box-{rng.randrange(300):03d}",
            period_start=start,
            accession_number=f"ACN{seed}-{index}",
            accession_system="urn:oid:1.2.250.1.213.4.5.2.5",
            modalities=(rng.choice(_MODALITIES),),
            regions=(rng.choice(_REGIONS),),
            author=Party("urn:oid:1.2.250.1.71.4.2.1", f"8100{rng.randrange(10**8):08d}"),
            custodian=Party("urn:oid:1.2.250.1.71.4.2.2", f"75{rng.randrange(10**7):07d}"),
            masked=rng.randrange(100) < _MASKED_PERCENT,
        )
        yield manifest, kos, _uuid4_text(rng.getrandbits(128))


def load_synthetic_entries(
    store: RegistryStore,
    count: int,
    *,
    seed: int = 0,
    batch_size: int = 2000,
    instances: int = 4,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Insert ``count`` synthetic entries in batches; return how many were inserted.

    Parameters
    ----------
    store
        The target store (use a fresh one: the entries are new KOS UIDs for a given seed).
    count, seed
        How many, and which (see :func:`synthetic_entries`).
    batch_size
        Rows per transaction.
    instances
        Images referenced per KOS.
    progress
        Called with the number inserted so far after each batch.
    """
    now = datetime.now(UTC)
    rows = (
        (entry_row(manifest, entry_id=entry_id, kos=kos, now=now, replaces_id=None), kos)
        for manifest, kos, entry_id in synthetic_entries(count, seed=seed, instances=instances)
    )
    done = 0
    while done < count:
        size = min(batch_size, count - done)
        store.insert_many(itertools.islice(rows, size), count=size)  # generated while sent
        done += size
        if progress is not None:
            progress(done)
    return done
