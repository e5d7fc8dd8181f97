"""Ports: what the services need from the outside world, as structural protocols.

Every port has a memory adapter and one contract test module that runs against every adapter
(``tests/contract/``), so "S3 behaves like the filesystem" is a checked fact.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Protocol, runtime_checkable

from drimbox.model import (
    AddOutcome,
    DicomJson,
    Exam,
    IndexStatistics,
    InstanceLocation,
    InstanceRecord,
    OutboxJob,
    Query,
    SearchResult,
    StoredBlob,
)
from registry.models import ManifestSubmission

__all__ = [
    "AuditLog",
    "BlobStore",
    "BlobWrite",
    "Index",
    "Pacs",
    "PublicationStore",
    "Registry",
]


@runtime_checkable
class BlobWrite(Protocol):
    """An object written by :meth:`BlobStore.write` whose sync may still be running."""

    def stored(self) -> StoredBlob:
        """Return the object's key, size and SHA-256 (known once written; not yet durable)."""
        ...

    def wait_durable(self) -> StoredBlob:
        """Wait until the object would survive a crash, then return it.

        Raises :class:`drimbox.errors.StorageError` when it cannot be made durable; the object
        is then removed.
        """
        ...

    def discard(self) -> None:
        """Remove the object (after its sync, if one is running); never raises."""
        ...


@runtime_checkable
class BlobStore(Protocol):
    """Durable storage of opaque byte objects (stored DICOM Part 10 files).

    Keys are chosen by the store, never by the caller, and never derived from any received
    string. Every method is thread-safe. Failures raise :class:`drimbox.errors.StorageError`
    subclasses (``StorageFullError``, ``StorageUnavailableError``) or
    :class:`drimbox.errors.BlobNotFoundError`.
    """

    def put(self, chunks: Iterable[bytes]) -> StoredBlob:
        """Write a new object durably and return its key, size and SHA-256.

        Returns only once the object would survive a crash (fsync of file and directory, or a
        completed S3 PUT). On failure nothing is left visible under any key.
        """
        ...

    def write(self, chunks: Iterable[bytes]) -> BlobWrite:
        """Write a new object and start making it durable; return at once with its handle.

        The caller may do other work (index the object) while the sync runs, and must then
        call :meth:`BlobWrite.wait_durable` or :meth:`BlobWrite.discard`. Stores that cannot
        sync in the background return a handle that is already durable. The object is
        readable at once; failures to write raise here, as :meth:`put` does.
        """
        ...

    def stream(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Yield the object's bytes in chunks of at most ``chunk_size``."""
        ...

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        """Return ``length`` bytes from ``offset`` (fewer at the end of the object)."""
        ...

    def size(self, key: str) -> int:
        """Return the object's size in bytes."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object; deleting a missing key is not an error."""
        ...

    def keys(self) -> Iterator[str]:
        """Yield every key held (for reconciliation)."""
        ...

    def cleanup_temporary(self, stale_after_seconds: float = 3600.0) -> int:
        """Remove what interrupted puts left (temporary files, incomplete uploads); count it.

        Only what is older than ``stale_after_seconds`` goes, so puts in progress (another
        process's included) are spared. Never touches a stored object.
        """
        ...

    def close(self) -> None:
        """Release resources."""
        ...


@runtime_checkable
class Index(Protocol):
    """The database of stored instances, at patient/study/series/instance levels.

    Every method is thread-safe and may be shared by several processes over the same database.
    Failures raise :class:`drimbox.errors.IndexUnavailableError`; malformed queries raise
    :class:`drimbox.errors.InvalidQueryError`.
    """

    def add_instance(self, record: InstanceRecord) -> AddOutcome:
        """Index a new instance atomically.

        Returns ``DUPLICATE`` (and changes nothing) when the SOP Instance UID is already
        indexed, even under concurrent calls from several threads or processes.
        """
        ...

    def get_instance(self, sop_instance_uid: str) -> InstanceLocation | None:
        """Return where an instance is stored, or ``None``."""
        ...

    def locate(
        self,
        study_instance_uid: str,
        series_instance_uid: str | None = None,
        sop_instance_uid: str | None = None,
    ) -> list[InstanceLocation]:
        """Return the instances of a study (optionally of one series / one instance).

        Ordered by series number then instance number; empty when nothing matches.
        """
        ...

    def metadata(
        self,
        study_instance_uid: str,
        series_instance_uid: str | None = None,
        sop_instance_uid: str | None = None,
    ) -> Iterator[DicomJson]:
        """Yield the precomputed DICOM JSON metadata of the selected instances (same order)."""
        ...

    def metadata_documents(
        self,
        study_instance_uid: str,
        series_instance_uid: str | None = None,
        sop_instance_uid: str | None = None,
    ) -> Iterator[str]:
        """Yield the same metadata as :meth:`metadata`, as the stored JSON text (no re-encoding).

        This is what ``/metadata`` streams: each document is one instance's JSON object.
        """
        ...

    def search(self, query: Query) -> SearchResult:
        """Match a hierarchical query (PS3.4 §C.2.2 matching rules)."""
        ...

    def remove_instance(self, sop_instance_uid: str) -> InstanceLocation | None:
        """Remove an instance from the index (empty series/studies/patients go too)."""
        ...

    def newest_instances(self, limit: int) -> list[InstanceLocation]:
        """Return the last ``limit`` instances indexed, newest first (start-up checks)."""
        ...

    def reject_instances(self, sop_instance_uids: Iterable[str]) -> int:
        """Hide instances rejected by IOCM (PS3.4 / IHE RAD TF-2 IOCM); return how many.

        A rejected instance is no longer returned by any query, locate, metadata or
        get_instance, nor counted; its bytes stay until a retention policy removes them.
        Unknown UIDs are ignored; rejecting twice is harmless. An instance received again
        after its rejection stays rejected.
        """
        ...

    def statistics(self) -> IndexStatistics:
        """Return entity counts and the total stored bytes."""
        ...

    def blob_keys(self) -> Iterator[str]:
        """Yield the blob key of every indexed instance."""
        ...

    def unstable_studies(self, quiet_since: datetime) -> list[str]:
        """Return studies not yet stable whose last instance arrived before ``quiet_since``."""
        ...

    def mark_stable(self, study_instance_uid: str) -> bool:
        """Mark a study stable; ``False`` if it got a new instance meanwhile or is unknown.

        A new instance for a stable study makes it unstable again.
        """
        ...

    def close(self) -> None:
        """Release connections."""
        ...


@runtime_checkable
class AuditLog(Protocol):
    """Append-only record of security-relevant events (who, what, when, outcome)."""

    def record(self, event: str, outcome: str, **fields: str | int | None) -> None:
        """Append one event; never raises on the caller's path (logs the failure instead)."""
        ...


@runtime_checkable
class PublicationStore(Protocol):
    """Durable state of the source workflow: exams and the registry outbox.

    Each method is one transaction, safe across threads and processes.
    """

    def get_exam(self, study_instance_uid: str) -> Exam | None:
        """Return the exam, or ``None``."""
        ...

    def save_exam(self, exam: Exam) -> None:
        """Insert or update an exam (no outbox job)."""
        ...

    def queue_job(self, exam: Exam, job: OutboxJob) -> OutboxJob:
        """Save ``exam`` and append ``job`` to the outbox atomically; return the job with its id.

        ``job.job_id`` is ignored; the store assigns the next id.
        """
        ...

    def due_jobs(self, now: datetime, limit: int = 50) -> list[OutboxJob]:
        """Pending jobs due at ``now``, oldest first, at most one per exam (its oldest pending)."""
        ...

    def finish_job(self, job: OutboxJob, exam: Exam) -> None:
        """Record a job's final state (done or rejected) and the exam's new state atomically."""
        ...

    def postpone_job(self, job: OutboxJob) -> None:
        """Record a failed attempt (attempts, next_attempt_at, last_error)."""
        ...

    def jobs(self, study_instance_uid: str | None = None) -> list[OutboxJob]:
        """Every job (of one exam), oldest first."""
        ...

    def exams(self) -> list[Exam]:
        """Every exam, most recently updated first."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


@runtime_checkable
class Registry(Protocol):
    """The national registry, as the publisher needs it (``registry.client.RegistryClient``).

    Errors: ``registry.errors``' unavailable error (retry later) and rejected error (do not retry).
    """

    def publish(self, manifest: ManifestSubmission, kos: bytes) -> str:
        """Publish (or, with ``manifest.replaces``, replace) a manifest; return its entry id.

        Idempotent: publishing the same KOS SOP Instance UID again returns the same entry.
        """
        ...

    def delete(self, entry_id: str) -> object:
        """De-publish an entry (status entered-in-error); idempotent."""
        ...


@runtime_checkable
class Pacs(Protocol):
    """The site's PACS, for fetching a study that a report refers to (C-FIND + C-MOVE)."""

    def find_studies(
        self, study_instance_uid: str | None = None, accession_number: str | None = None
    ) -> list[str]:
        """Return the StudyInstanceUIDs the PACS holds matching either key."""
        ...

    def retrieve_study(self, study_instance_uid: str) -> int:
        """Ask the PACS to send the study to this box (C-MOVE); return instances completed.

        Raises :class:`drimbox.errors.PacsError` when the PACS cannot be reached or refuses.
        """
        ...
