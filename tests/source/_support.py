"""Helpers of the source-workflow end-to-end tests: ANS report messages, matching synthetic
studies, the site (Orthanc as PACS + a box), a standalone registry process, CLI reads, polling."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
from pydicom.dataset import Dataset

from drimbox.dicom.kos import KeyObjectDocument, parse_kos
from drimbox.dicom.synthetic import SyntheticStudy, make_study
from drimbox.hl7.mllp import send_message
from drimbox.identity import INS_NIR_TEST_OID
from drimbox.model import Exam, ExamState
from registry.client import RegistryClient
from registry.models import EntryStatus, RegistryEntry, SearchQuery
from tests.fixtures.orthanc import OrthancServer
from tests.hl7.ans import hl7_path

if TYPE_CHECKING:
    from drimbox.bootstrap import Box

__all__ = [
    "ANS_STUDY_ROOT",
    "ANY_SYNTAX",
    "BOX_AET",
    "EXAM_M_PATIENT",
    "INS",
    "ORG_ROOT",
    "PACS_AET",
    "PatientTraits",
    "Site",
    "ack_code",
    "ans_message",
    "ans_study",
    "cli_json",
    "data_set",
    "exam_datasets",
    "kos_series",
    "part10",
    "read_kos",
    "registry_entries",
    "retrieve_series",
    "wait_for",
    "with_flag",
    "with_study_uid",
]

BOX_AET = "DRIMBOX"
PACS_AET = "PACS"
ORG_ROOT = "1.2.250.1.999.42"
INS = "279035121518989"
"""The INS of every ANS sample patient (test NIR range)."""
ANS_STUDY_ROOT = "1.2.250.1.213.4.5.2.1."
"""StudyInstanceUIDs of the ANS exams: this root + 101 (exam A) ... 114 (exam M)."""
ANY_SYNTAX = 'multipart/related; type="application/dicom"; transfer-syntax=*'
_DRIMBOX = Path(sys.executable).parent / "drimbox"
_OBX5 = b"^TEXT^XML^Base64^"
_POLL = 0.05
_PREAMBLE = 128
_META_START = _PREAMBLE + 4  # (0002,0000) UL, explicit VR: tag 4 + VR 2 + length 2 + value 4

T = TypeVar("T")


@dataclass(frozen=True)
class PatientTraits:
    """Patient attributes the synthetic images carry."""

    patient_id: str = "IPP101"
    name: str = "PAT-TROIS^DOMINIQUE"
    birth_date: str = "19790328"
    sex: str = "F"


EXAM_M_PATIENT = PatientTraits(name="ANS-DRIM^PatientBis", birth_date="20120125", sex="M")


def ans_study(number: int) -> str:
    """StudyInstanceUID of ANS exam ``number`` (101 = exam A ... 114 = exam M)."""
    return f"{ANS_STUDY_ROOT}{number}"


def ans_message(name: str, replacements: dict[bytes, bytes] | None = None) -> bytes:
    """An ANS sample message (e.g. ``CR_C-ORU``), with exact byte replacements applied."""
    raw = hl7_path(name).read_bytes()
    for old, new in (replacements or {}).items():
        assert old in raw, f"{old!r} is not in {name}"
        raw = raw.replace(old, new)
    return raw


def with_study_uid(message: bytes, old: str, new: str) -> bytes:
    """``message`` whose CDA (Base64 in OBX-5) names StudyInstanceUID ``new`` instead of ``old``."""
    start = message.index(_OBX5) + len(_OBX5)
    end = message.index(b"|", start)
    cda = base64.b64decode(message[start:end])
    marker = f'<id root="{old}"/>'.encode()
    assert cda.count(marker) == 1
    encoded = base64.b64encode(cda.replace(marker, f'<id root="{new}"/>'.encode()))
    return message[:start] + encoded + message[end:]


def exam_datasets(
    study_instance_uid: str,
    accession_number: str,
    *,
    patient: PatientTraits = PatientTraits(),
    series_count: int = 2,
    instances_per_series: int = 3,
) -> list[Dataset]:
    """Synthetic images of an ANS exam: its StudyInstanceUID, accession and patient."""
    shape = SyntheticStudy(
        seed=f"source-{study_instance_uid}",
        patient_id=patient.patient_id,
        patient_name=patient.name,
        series_count=series_count,
        instances_per_series=instances_per_series,
        rows=16,
        columns=16,
        accession_number=accession_number,
    )
    datasets = []
    for ds in make_study(shape):
        ds.StudyInstanceUID = study_instance_uid
        ds.PatientBirthDate = patient.birth_date
        ds.PatientSex = patient.sex
        datasets.append(ds)
    return datasets


def part10(dataset: Dataset) -> bytes:
    """Encode a data set as a Part 10 file."""
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def data_set(part10_bytes: bytes) -> bytes:
    """The data set of a Part 10 file, without preamble and File Meta Information (PS3.10 §7.1).

    A box writes its own File Meta (Implementation Class UID...) for what it receives over DIMSE,
    where no File Meta travels: the data set is what must be byte-identical.
    """
    assert part10_bytes[_PREAMBLE : _PREAMBLE + 4] == b"DICM"
    group_length = int.from_bytes(part10_bytes[_META_START + 8 : _META_START + 12], "little")
    return part10_bytes[_META_START + 12 + group_length :]


def ack_code(ack: bytes) -> str:
    """MSA-1 of an HL7 acknowledgment."""
    for segment in ack.decode().split("\r"):
        if segment.startswith("MSA|"):
            return segment.split("|")[1]
    raise AssertionError(f"no MSA segment in {ack!r}")


def wait_for(probe: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll ``probe`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(_POLL)


def cli_json(data_dir: Path, *args: str) -> Any:
    """Run ``drimbox <args> --json`` on a data directory and return the decoded output."""
    result = subprocess.run(
        [str(_DRIMBOX), *args, "--json", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(result.stdout)


def registry_entries(
    registry_url: str, statuses: tuple[EntryStatus, ...] = tuple(EntryStatus)
) -> list[RegistryEntry]:
    """Every entry of the ANS patient in a registry (any status by default)."""
    with RegistryClient(registry_url) as client:
        return client.search(
            SearchQuery(patient_value=INS, patient_oid=INS_NIR_TEST_OID, statuses=statuses)
        )


@dataclass
class Site:
    """A radiology site: Orthanc as its PACS and an in-process box that knows it.

    Attributes
    ----------
    pacs
        Orthanc, which lists the box as modality ``drimbox`` (C-MOVE destination).
    box
        The box, whose peers hold the PACS and whose ``pacs_aet`` names it.
    registry_url
        FHIR base of the registry the box publishes to.
    """

    pacs: OrthancServer
    box: Box
    registry_url: str
    loaded: dict[str, list[str]] = field(default_factory=dict)

    @property
    def dicomweb(self) -> str:
        """The box's DICOMweb base."""
        return f"http://127.0.0.1:{self.box.http_port}/dicom-web"

    def load(self, datasets: list[Dataset]) -> list[str]:
        """Store images in the PACS (not in the box); return their Orthanc ids."""
        ids = [self.pacs.upload(part10(ds)) for ds in datasets]
        for ds, orthanc_id in zip(datasets, ids, strict=True):
            self.loaded.setdefault(str(ds.StudyInstanceUID), []).append(orthanc_id)
        return ids

    def push(self, ids: list[str]) -> None:
        """The PACS C-STOREs resources to the box."""
        answer = self.pacs.store_to_modality("drimbox", ids)
        assert answer["FailedInstancesCount"] == 0, answer

    def wait_stable(self, timeout: float = 10) -> None:
        """Wait until every study the box holds is stable."""
        wait_for(
            lambda: not self.box.index.unstable_studies(datetime.now(UTC)), timeout, "stability"
        )

    def send(self, message: bytes) -> str:
        """Send a message over MLLP; return MSA-1."""
        return ack_code(send_message("127.0.0.1", self.box.hl7_port, message, timeout=30))

    def audit(self, event: str) -> list[dict[str, Any]]:
        """The box's audit records of ``event``."""
        records = self.box.audit.records()  # type: ignore[attr-defined]
        return [record for record in records if record["event"] == event]

    def exam(self, study_instance_uid: str) -> Exam | None:
        """The box's exam of a study."""
        return self.box.publications.get_exam(study_instance_uid)

    def wait_state(self, study_instance_uid: str, state: ExamState, timeout: float = 20) -> Exam:
        """Wait until the exam reaches ``state`` with no pending outbox job."""

        def probe() -> Exam | None:
            exam = self.exam(study_instance_uid)
            if exam is None or exam.state is not state:
                return None
            pending = [
                job
                for job in self.box.publications.jobs()
                if job.study_instance_uid == study_instance_uid and job.state.value == "pending"
            ]
            return None if pending else exam

        return wait_for(probe, timeout, f"{study_instance_uid} to be {state.value}")

    def entries(
        self, statuses: tuple[EntryStatus, ...] = tuple(EntryStatus)
    ) -> list[RegistryEntry]:
        """The ANS patient's entries in the registry."""
        return registry_entries(self.registry_url, statuses)

    def retrieve_kos(self, entry: RegistryEntry) -> bytes:
        """ITI-68: the KOS bytes of an entry."""
        with RegistryClient(self.registry_url) as client:
            return client.retrieve(entry.entry_id)

    def orthanc_series(self, study: str, series: str) -> list[bytes]:
        """What the PACS serves for a series over WADO-RS (data sets, sorted)."""
        from tests.dicomweb.conftest import multipart_parts

        url = f"{self.pacs.dicomweb_url}/studies/{study}/series/{series}"
        response = httpx.get(url, headers={"Accept": ANY_SYNTAX}, timeout=30)
        response.raise_for_status()
        return sorted(data_set(body) for _, body in multipart_parts(response))


def retrieve_series(url: str) -> tuple[int, list[bytes]]:
    """GET a RetrieveURL (WADO-RS series); return the status and the sorted data sets."""
    from tests.dicomweb.conftest import multipart_parts

    response = httpx.get(url, headers={"Accept": ANY_SYNTAX}, timeout=30)
    if response.status_code != httpx.codes.OK:
        return response.status_code, []
    return response.status_code, sorted(data_set(body) for _, body in multipart_parts(response))


def kos_series(document: KeyObjectDocument) -> Iterator[tuple[str, str, str, set[str]]]:
    """``(study, series, RetrieveURL, SOP Instance UIDs)`` of each evidence series."""
    for study, series_list in document.evidence:
        for series in series_list:
            assert series.retrieve_url is not None
            uids = {instance.sop_instance_uid for instance in series.instances}
            yield study, series.series_instance_uid, series.retrieve_url, uids


def read_kos(data: bytes) -> KeyObjectDocument:
    """Parse a published KOS."""
    return parse_kos(data)


def with_flag(message: bytes, flag: bytes, value: bytes) -> bytes:
    """Set a DMP flag OBX (e.g. ``DESTDMP``) of a sample message to ``Y``/``N``."""
    marker = flag + b"^"
    start = message.index(marker)
    end = message.index(b"\r", start)
    segment = message[start:end]
    head, _, tail = segment.partition(b"||")
    return message[:start] + head + b"||" + value + tail[1:] + message[end:]
