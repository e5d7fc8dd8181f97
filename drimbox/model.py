"""Value objects shared by services, ports and adapters.

They carry no behaviour beyond validation of their own invariants and are immutable, so they can
cross threads and processes freely.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

__all__ = [
    "AddOutcome",
    "DicomJson",
    "Exam",
    "ExamState",
    "IndexStatistics",
    "InstanceLocation",
    "InstanceRecord",
    "JobAction",
    "JobState",
    "Level",
    "OutboxJob",
    "Query",
    "SearchResult",
    "StoreResult",
    "StoredBlob",
]

DicomJson = dict[str, Any]
"""A DICOM JSON data set (PS3.18 §F.2): ``{"0020000D": {"vr": "UI", "Value": [...]}, ...}``."""


class Level(StrEnum):
    """Query/retrieve level (PS3.4 §C.3)."""

    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"


@dataclass(frozen=True, slots=True)
class StoredBlob:
    """An object written durably by a :class:`drimbox.ports.BlobStore`.

    Attributes
    ----------
    key
        Opaque key chosen by the store (never derived from a UID or received string).
    size
        Size in bytes.
    sha256
        Lower-case hex SHA-256 of the content (computed while writing).
    """

    key: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """Everything the index keeps about one stored instance.

    Attributes
    ----------
    sop_instance_uid, sop_class_uid, series_instance_uid, study_instance_uid
        The instance's identity and place in the hierarchy.
    transfer_syntax_uid
        Transfer syntax of the stored bytes (as received).
    blob
        Where and what the stored Part 10 file is.
    attributes
        Indexed attributes by pydicom keyword, at every level (see
        :mod:`drimbox.dicom.attributes`), values in their DICOM string form (PN as ``A^B``,
        DA as ``YYYYMMDD``, IS as decimal text, multi-valued joined with ``\\``); ``None``
        when absent.
    metadata
        The instance's DICOM JSON with bulk data replaced by ``BulkDataURI`` of the form
        ``{+base}/studies/<st>/series/<se>/instances/<sop>/bulkdata/<tag>`` (see
        :mod:`drimbox.dicom.metadata`; ``{+base}`` is replaced by the DICOMweb base URL when
        served), served by WADO-RS ``/metadata``.
    received_at
        When the box acknowledged it (UTC).
    number_of_frames
        Number of frames (1 for single-frame images, 0 when there is no pixel data).
    pixel_data_offset
        Byte offset, in the stored file, of the Pixel Data element's value (or of its first
        fragment item for encapsulated syntaxes), or ``None`` when there is no pixel data.
    """

    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str
    study_instance_uid: str
    transfer_syntax_uid: str
    blob: StoredBlob
    attributes: Mapping[str, str | None]
    metadata: DicomJson
    received_at: datetime
    number_of_frames: int = 0
    pixel_data_offset: int | None = None


@dataclass(frozen=True, slots=True)
class InstanceLocation:
    """What retrieval needs to find and serve one instance."""

    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str
    study_instance_uid: str
    transfer_syntax_uid: str
    blob: StoredBlob
    number_of_frames: int = 0
    pixel_data_offset: int | None = None


class AddOutcome(StrEnum):
    """Result of :meth:`drimbox.ports.Index.add_instance`."""

    STORED = "stored"
    DUPLICATE = "duplicate"


@dataclass(frozen=True, slots=True)
class StoreResult:
    """Outcome of storing one instance (success paths only; refusals raise).

    Attributes
    ----------
    location
        The instance as indexed (for a duplicate, the copy already held).
    duplicate
        ``True`` when the SOP Instance UID was already held and the received copy was dropped.
    identical
        For a duplicate, whether the received bytes were identical to the held copy.
    """

    location: InstanceLocation
    duplicate: bool = False
    identical: bool = True


@dataclass(frozen=True, slots=True)
class Query:
    """A hierarchical query (QIDO-RS or C-FIND).

    Attributes
    ----------
    level
        The level whose entities are returned.
    filters
        Matching keys by pydicom keyword; values use DICOM matching syntax (PS3.4 §C.2.2.2):
        single value, ``*``/``?`` wildcards, ``A\\B`` UID lists, ``A-B`` date/time ranges.
        Empty string means "return, don't match" (universal matching).
    fuzzy
        Fuzzy (case- and accent-insensitive, prefix) matching of person names.
    include
        Extra keywords to return (``{"all"}`` for every indexed attribute).
    limit, offset
        Paging; ``limit=None`` means the adapter's configured maximum.
    """

    level: Level
    filters: Mapping[str, str] = field(default_factory=dict)
    fuzzy: bool = False
    include: frozenset[str] = frozenset()
    limit: int | None = None
    offset: int = 0


@dataclass(frozen=True, slots=True)
class SearchResult:
    """Matches of a :class:`Query`, as DICOM JSON data sets at the query level.

    Attributes
    ----------
    matches
        One DICOM JSON data set per matching entity, with the level's required attributes, the
        filter keys, the included attributes and the computed counts.
    truncated
        ``True`` when more matches exist beyond ``limit`` (QIDO answers with a ``Warning``).
    """

    matches: list[DicomJson]
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class IndexStatistics:
    """Counts reported by ``drimbox status``."""

    patients: int
    studies: int
    series: int
    instances: int
    stored_bytes: int


class ExamState(StrEnum):
    """Publication state of one exam (StudyInstanceUID) on this box."""

    WAITING_FOR_IMAGES = "waiting-for-images"
    """The report arrived; the images are being retrieved or are not stable yet."""
    IMAGES_TIMED_OUT = "images-timed-out"
    """The images never arrived within the configured time."""
    QUARANTINED = "quarantined"
    """Identity vigilance or coherence refused it; ``reason`` says why."""
    NOT_FOR_DMP = "not-for-dmp"
    """The report's DMP flag forbids publication."""
    QUEUED = "queued"
    """A manifest is queued in the outbox."""
    PUBLISHED = "published"
    """The current manifest is in the registry."""
    REJECTED = "rejected"
    """The registry refused the manifest; ``reason`` holds its OperationOutcome."""
    DEPUBLISHED = "depublished"
    """The manifest was withdrawn (report cancelled, or every image rejected)."""


class JobAction(StrEnum):
    """What an outbox job does at the registry."""

    PUBLISH = "publish"
    REPLACE = "replace"
    DELETE = "delete"


class JobState(StrEnum):
    """State of an outbox job."""

    PENDING = "pending"
    DONE = "done"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class Exam:
    """What the box knows about one exam's publication.

    Attributes
    ----------
    study_instance_uid
        The exam.
    state
        Where it stands.
    reason
        Why it is quarantined / rejected / timed out (no patient identity in it).
    version
        Number of manifests built so far (the current one's version).
    report
        The last report notice accepted for the exam (JSON-able dict).
    kos_sop_instance_uid
        UID of the current manifest, if any.
    registry_entry_id
        Registry id of the published manifest, if any.
    updated_at
        Last change.
    referenced_digest
        SHA-256 of the sorted SOP Instance UIDs the current manifest references: when the
        study's instances change (late images, IOCM rejection), the manifest is rebuilt.
    """

    study_instance_uid: str
    state: ExamState
    reason: str | None
    version: int
    report: dict[str, Any]
    kos_sop_instance_uid: str | None
    registry_entry_id: str | None
    updated_at: datetime
    referenced_digest: str | None = None


@dataclass(frozen=True, slots=True)
class OutboxJob:
    """One registry operation queued durably (exactly-once publication).

    Attributes
    ----------
    job_id
        Monotonic id; jobs of one exam run strictly in id order.
    study_instance_uid
        The exam.
    action
        Publish, replace or delete.
    version
        Manifest version concerned.
    kos_sop_instance_uid
        The manifest (idempotency key at the registry).
    kos_blob_key
        Where the KOS bytes are (publish/replace).
    submission
        The registry metadata (JSON-able dict of :class:`registry.models.ManifestSubmission`).
    replaces
        For replace/delete: the KOS SOP Instance UID (or entry id) acted upon.
    state
        Pending, done or rejected.
    attempts
        Tries so far.
    next_attempt_at
        Not before this time (exponential backoff with jitter).
    last_error
        The last failure, for ``drimbox publications``.
    registry_entry_id
        The registry's id once done.
    created_at
        When it was queued.
    """

    job_id: int
    study_instance_uid: str
    action: JobAction
    version: int
    kos_sop_instance_uid: str | None
    kos_blob_key: str | None
    submission: dict[str, Any] | None
    replaces: str | None
    state: JobState
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    registry_entry_id: str | None
    created_at: datetime
