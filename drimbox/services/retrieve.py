"""Retrieve use case (WADO-RS, WADO-URI, C-GET/C-MOVE sources): locate, read and audit instances.

Everything here is synchronous and thread-safe; callers stream the generators it returns from a
worker thread. Instance bytes are never held whole unless the caller asks for them
(:meth:`RetrieveService.read`, used for transcoding and rendering of single instances).
"""

from __future__ import annotations

import io
from collections.abc import Iterator

from drimbox.errors import NotFoundError
from drimbox.model import InstanceLocation
from drimbox.ports import AuditLog, BlobStore, Index

__all__ = ["RetrieveService"]

_CHUNK_SIZE = 1 << 20


class RetrieveService:
    """Find stored instances and hand out their bytes and metadata.

    Parameters
    ----------
    blobs
        Where the Part 10 files are.
    index
        Where the instances are indexed.
    audit
        The audit trail; every retrieval is recorded once per request.
    """

    def __init__(self, blobs: BlobStore, index: Index, audit: AuditLog) -> None:
        self._blobs = blobs
        self._index = index
        self._audit = audit

    def locate(
        self,
        study_instance_uid: str,
        series_instance_uid: str | None = None,
        sop_instance_uid: str | None = None,
    ) -> list[InstanceLocation]:
        """Return the selected instances, in series then instance number order.

        Raises
        ------
        NotFoundError
            Nothing matches.
        """
        locations = self._index.locate(study_instance_uid, series_instance_uid, sop_instance_uid)
        if not locations:
            raise NotFoundError(
                _describe(study_instance_uid, series_instance_uid, sop_instance_uid)
            )
        return locations

    def stream(self, location: InstanceLocation, chunk_size: int = _CHUNK_SIZE) -> Iterator[bytes]:
        """Yield the stored Part 10 bytes of an instance in chunks."""
        return self._blobs.stream(location.blob.key, chunk_size)

    def read(self, location: InstanceLocation) -> bytes:
        """Return the whole stored Part 10 file of one instance."""
        return b"".join(self._blobs.stream(location.blob.key, _CHUNK_SIZE))

    def read_range(self, location: InstanceLocation, offset: int, length: int) -> bytes:
        """Return ``length`` bytes of the stored file from ``offset`` (frames, bulk data)."""
        return self._blobs.read_range(location.blob.key, offset, length)

    def open(self, location: InstanceLocation) -> io.BufferedReader:
        """Return a seekable, lazily read file object over the stored file."""
        return io.BufferedReader(_BlobReader(self._blobs, location.blob.key, location.blob.size))

    def metadata_documents(
        self,
        study_instance_uid: str,
        series_instance_uid: str | None = None,
        sop_instance_uid: str | None = None,
    ) -> list[str]:
        """Return each selected instance's stored DICOM JSON text, in retrieval order.

        Raises
        ------
        NotFoundError
            Nothing matches.
        """
        documents = list(
            self._index.metadata_documents(
                study_instance_uid, series_instance_uid, sop_instance_uid
            )
        )
        if not documents:
            raise NotFoundError(
                _describe(study_instance_uid, series_instance_uid, sop_instance_uid)
            )
        return documents

    def record(
        self,
        transaction: str,
        outcome: str,
        study_instance_uid: str,
        series_instance_uid: str | None = None,
        sop_instance_uid: str | None = None,
        **fields: str | int | None,
    ) -> None:
        """Audit one retrieval (``transaction`` such as ``WADO-RS``; ``outcome`` success/...)."""
        self._audit.record(
            "retrieve",
            outcome,
            transaction=transaction,
            study=study_instance_uid,
            series=series_instance_uid,
            instance=sop_instance_uid,
            **fields,
        )


def _describe(study: str, series: str | None, instance: str | None) -> str:
    if instance is not None:
        return f"no instance {instance} in series {series} of study {study}"
    if series is not None:
        return f"no series {series} in study {study}"
    return f"no study {study}"


class _BlobReader(io.RawIOBase):
    """Random access over a stored object through ``BlobStore.read_range``."""

    name = None
    """No file name: readers such as pydicom must not try to re-open the object by name."""

    def __init__(self, blobs: BlobStore, key: str, size: int) -> None:
        self._blobs = blobs
        self._key = key
        self._size = size
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        wanted = min(len(buffer), self._size - self._position)
        if wanted <= 0:
            return 0
        data = self._blobs.read_range(self._key, self._position, wanted)
        buffer[: len(data)] = data
        self._position += len(data)
        return len(data)
