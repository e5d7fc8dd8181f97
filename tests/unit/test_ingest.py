"""IngestService over the memory adapters: storage order, duplicates, refusals, STOW-RS path."""

from __future__ import annotations

import io
import threading
import zlib
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from drimbox.audit import MemoryAuditLog
from drimbox.dicom.part10 import encode_file_meta
from drimbox.dicom.synthetic import SyntheticStudy, make_instance
from drimbox.errors import (
    FailureReason,
    IndexUnavailableError,
    InstanceTooLargeError,
    InvalidInstanceError,
    StorageUnavailableError,
    UIDMismatchError,
    UnreadableInstanceError,
)
from drimbox.index import MemoryIndex
from drimbox.model import AddOutcome, InstanceRecord, StoredBlob
from drimbox.services.ingest import IngestService
from drimbox.storage import FilesystemBlobStore, MemoryBlobStore
from drimbox.storage._written import DurableWrite

EXPLICIT = "1.2.840.10008.1.2.1"
DEFLATED = "1.2.840.10008.1.2.1.99"
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


class _FailingIndex(MemoryIndex):
    """A memory index whose writes fail, as an unreachable database does."""

    def add_instance(self, record: InstanceRecord) -> AddOutcome:
        raise IndexUnavailableError("database is down")


class _FailingBlobStore(MemoryBlobStore):
    def put(self, chunks: object) -> object:  # type: ignore[override]
        raise StorageUnavailableError("S3 is down")


class _UnsyncableWrite(DurableWrite):
    """A written object whose sync fails, as an fsync hitting an I/O error does."""

    def wait_durable(self) -> StoredBlob:
        self.discard()
        raise StorageUnavailableError("fsync: input/output error")


class _UnsyncableBlobStore(MemoryBlobStore):
    def write(self, chunks: Iterable[bytes]) -> DurableWrite:
        return _UnsyncableWrite(self.put(chunks), self.delete)


def _service(
    blobs: MemoryBlobStore | None = None, index: MemoryIndex | None = None, limit: int = 1 << 24
) -> tuple[IngestService, MemoryBlobStore, MemoryIndex, MemoryAuditLog]:
    blobs = blobs or MemoryBlobStore()
    index = index or MemoryIndex()
    audit = MemoryAuditLog()
    return (
        IngestService(blobs, index, audit, max_instance_bytes=limit, clock=lambda: NOW),
        blobs,
        index,
        audit,
    )


def _encoded(ds: Dataset) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_dataset(buffer, ds)
    return buffer.getvalue()


def _instance(seed: str = "ingest", **changes: object) -> Dataset:
    ds = make_instance(SyntheticStudy(seed=seed), 0, 0)
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    return ds


def _store(service: IngestService, ds: Dataset, raw: bytes | None = None) -> object:
    return service.store_dataset(
        io.BytesIO(_encoded(ds) if raw is None else raw),
        EXPLICIT,
        sop_class_uid=ds.SOPClassUID,
        sop_instance_uid=ds.SOPInstanceUID,
        source="TEST@127.0.0.1",
    )


def _part10(ds: Dataset, tmp_path: Path) -> bytes:
    path = tmp_path / "instance.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path.read_bytes()


def test_store_dataset_writes_file_meta_then_the_received_bytes_unchanged() -> None:
    service, blobs, index, audit = _service()
    ds = _instance()
    raw = _encoded(ds)
    received: list[InstanceRecord] = []
    service.subscribe(received.append)

    result = service.store_dataset(
        io.BytesIO(raw), EXPLICIT, sop_class_uid=ds.SOPClassUID,
        sop_instance_uid=ds.SOPInstanceUID, source="TEST@127.0.0.1",
    )  # fmt: skip

    meta = encode_file_meta(ds.SOPClassUID, ds.SOPInstanceUID, EXPLICIT)
    stored = b"".join(blobs.stream(result.location.blob.key))
    assert stored == meta + raw
    assert not result.duplicate
    assert result.location.pixel_data_offset is not None
    pixel = stored[result.location.pixel_data_offset :]
    assert pixel == ds.PixelData
    assert result.location.number_of_frames == 1
    assert index.get_instance(ds.SOPInstanceUID) == result.location
    [record] = received
    assert record.received_at == NOW
    assert record.attributes["PatientID"] == "PAT001"
    assert record.metadata["0020000D"]["Value"] == [ds.StudyInstanceUID]
    assert [e["event"] for e in audit.events] == ["dicom.instance.stored"]


def test_deferred_announcement_waits_for_the_caller_and_duplicates_defer_nothing() -> None:
    service, _, index, audit = _service()
    ds = _instance()
    received: list[InstanceRecord] = []
    service.subscribe(received.append)
    deferred: list[Callable[[], None]] = []

    def store() -> None:
        service.store_dataset(
            io.BytesIO(_encoded(ds)), EXPLICIT, sop_class_uid=ds.SOPClassUID,
            sop_instance_uid=ds.SOPInstanceUID, source="TEST@127.0.0.1", deferred=deferred,
        )  # fmt: skip

    store()
    assert index.get_instance(ds.SOPInstanceUID) is not None  # stored and indexed already
    assert (received, audit.events, len(deferred)) == ([], [], 1)
    deferred.pop()()
    assert [r.sop_instance_uid for r in received] == [ds.SOPInstanceUID]
    assert [e["event"] for e in audit.events] == ["dicom.instance.stored"]
    store()  # a duplicate is audited at once: nothing new to announce
    assert deferred == []
    assert [e["event"] for e in audit.events][-1] == "dicom.instance.duplicate"


def test_same_instance_twice_keeps_one_copy_and_reports_an_identical_duplicate() -> None:
    service, blobs, _, audit = _service()
    ds = _instance()

    first = _store(service, ds)
    second = _store(service, ds)

    assert second.duplicate and second.identical  # type: ignore[attr-defined]
    assert second.location == first.location  # type: ignore[attr-defined]
    assert len(list(blobs.keys())) == 1
    assert audit.events[-1]["event"] == "dicom.instance.duplicate"


def test_duplicate_with_different_bytes_keeps_the_first_copy_and_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    service, blobs, _, audit = _service()
    first_ds = _instance()
    changed = _instance(StudyDescription="changed")

    first = _store(service, first_ds)
    second = _store(service, changed)

    assert second.duplicate and not second.identical  # type: ignore[attr-defined]
    assert second.location.blob == first.location.blob  # type: ignore[attr-defined]
    assert len(list(blobs.keys())) == 1
    assert audit.events[-1]["outcome"] == "warning"
    assert "ingest.duplicate_differs" in caplog.text


def test_concurrent_stores_of_one_instance_index_it_once() -> None:
    service, blobs, index, _ = _service()
    ds = _instance()
    raw = _encoded(ds)
    stored: list[InstanceRecord] = []
    service.subscribe(stored.append)
    barrier = threading.Barrier(16)

    def store() -> None:
        barrier.wait()
        _store(service, ds, raw)

    threads = [threading.Thread(target=store) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(stored) == 1
    assert list(blobs.keys()) == [stored[0].blob.key]
    assert index.statistics().instances == 1


def test_index_failure_deletes_the_new_blob_and_raises() -> None:
    service, blobs, _, audit = _service(index=_FailingIndex())

    with pytest.raises(IndexUnavailableError):
        _store(service, _instance())

    assert list(blobs.keys()) == []
    assert audit.events[-1]["event"] == "dicom.instance.store_failed"


def test_blob_store_failure_raises_and_indexes_nothing() -> None:
    service, _, index, audit = _service(blobs=_FailingBlobStore())

    with pytest.raises(StorageUnavailableError):
        _store(service, _instance())

    assert index.statistics().instances == 0
    assert audit.events[-1]["stage"] == "blob store"


def test_a_blob_that_cannot_be_synced_takes_its_index_row_back() -> None:
    service, blobs, index, audit = _service(blobs=_UnsyncableBlobStore())
    ds = _instance()

    with pytest.raises(StorageUnavailableError):
        _store(service, ds)

    assert index.get_instance(str(ds.SOPInstanceUID)) is None
    assert index.statistics().instances == 0
    assert list(blobs.keys()) == []
    assert audit.events[-1]["stage"] == "blob store"


def test_the_index_row_is_committed_while_the_blob_is_synced(tmp_path: Path) -> None:
    seen: list[bool] = []

    class _WatchedIndex(MemoryIndex):
        def add_instance(self, record: InstanceRecord) -> AddOutcome:
            seen.append(record.blob.key in set(blobs.keys()))  # written, readable already
            return super().add_instance(record)

    blobs = FilesystemBlobStore(tmp_path / "blobs")
    service, _, index, _ = _service(blobs=blobs, index=_WatchedIndex())  # type: ignore[arg-type]
    ds = _instance()

    result = _store(service, ds)

    assert seen == [True]
    location = index.get_instance(str(ds.SOPInstanceUID))
    assert location is not None and result.location == location  # type: ignore[attr-defined]
    assert blobs.size(location.blob.key) == location.blob.size


def test_a_failing_subscriber_does_not_fail_the_store() -> None:
    service, _, index, _ = _service()

    def broken(record: InstanceRecord) -> None:
        raise RuntimeError("subscriber bug")

    service.subscribe(broken)
    _store(service, _instance())

    assert index.statistics().instances == 1


def test_oversized_data_set_is_refused_before_parsing() -> None:
    service, blobs, _, audit = _service(limit=1000)

    with pytest.raises(InstanceTooLargeError):
        _store(service, _instance())

    assert list(blobs.keys()) == []
    assert audit.events[-1]["reason"] == FailureReason.TOO_LARGE


def test_multi_frame_and_no_pixel_data_instances_report_their_frames() -> None:
    service, _, _, _ = _service()
    multi = _instance("multi", NumberOfFrames=2)
    multi.PixelData = multi.PixelData * 2
    no_pixels = _instance("no-pixels")
    del no_pixels.PixelData

    assert _store(service, multi).location.number_of_frames == 2  # type: ignore[attr-defined]
    location = _store(service, no_pixels).location  # type: ignore[attr-defined]
    assert (location.number_of_frames, location.pixel_data_offset) == (0, None)


def test_deflated_data_set_is_stored_still_deflated() -> None:
    service, blobs, _, _ = _service()
    ds = _instance("deflated")
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    raw = compressor.compress(_encoded(ds)) + compressor.flush()

    result = service.store_dataset(
        io.BytesIO(raw), DEFLATED, sop_class_uid=ds.SOPClassUID,
        sop_instance_uid=ds.SOPInstanceUID, source="TEST",
    )  # fmt: skip

    assert b"".join(blobs.stream(result.location.blob.key)).endswith(raw)
    assert result.location.transfer_syntax_uid == DEFLATED
    assert result.location.pixel_data_offset is None
    assert result.location.number_of_frames == 1


def test_data_set_in_another_encoding_than_its_transfer_syntax_is_refused() -> None:
    service, _, _, _ = _service()
    ds = _instance()

    with pytest.raises(UnreadableInstanceError):
        service.store_dataset(
            io.BytesIO(_encoded(ds)), "1.2.840.10008.1.2", sop_class_uid=ds.SOPClassUID,
            sop_instance_uid=ds.SOPInstanceUID, source="TEST",
        )  # fmt: skip


def test_store_part10_keeps_the_file_unchanged(tmp_path: Path) -> None:
    service, blobs, _, _ = _service()
    ds = _instance("stow")
    part10 = _part10(ds, tmp_path)

    result = service.store_part10(io.BytesIO(part10), source="STOW")

    assert b"".join(blobs.stream(result.location.blob.key)) == part10
    offset = result.location.pixel_data_offset
    assert offset is not None
    assert part10[offset : offset + 16] == ds.PixelData[:16]


def test_store_part10_reads_a_non_seekable_stream(tmp_path: Path) -> None:
    service, _, index, _ = _service()
    part10 = _part10(_instance("pipe"), tmp_path)

    class Pipe(io.RawIOBase):
        def __init__(self) -> None:
            self._data = io.BytesIO(part10)

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
            return self._data.readinto(buffer)

    service.store_part10(io.BufferedReader(Pipe()), source="STOW")

    assert index.statistics().instances == 1


def test_store_part10_refuses_an_instance_of_another_study(tmp_path: Path) -> None:
    service, blobs, _, _ = _service()

    with pytest.raises(InvalidInstanceError) as raised:
        service.store_part10(
            io.BytesIO(_part10(_instance(), tmp_path)), source="STOW", study_instance_uid="1.2.3"
        )

    assert raised.value.reason is FailureReason.STUDY_MISMATCH
    assert list(blobs.keys()) == []


def test_store_part10_refuses_file_meta_disagreeing_with_the_data_set(tmp_path: Path) -> None:
    service, _, _, _ = _service()
    ds = _instance()
    part10 = _part10(ds, tmp_path)
    uid = str(ds.SOPInstanceUID).encode()
    position = part10.index(uid) + len(uid) - 1
    patched = part10[:position] + (b"1" if part10[position] != ord("1") else b"2")
    patched += part10[position + 1 :]

    with pytest.raises(UIDMismatchError):
        service.store_part10(io.BytesIO(patched), source="STOW")


def test_store_part10_refuses_what_is_not_a_part10_file() -> None:
    service, _, _, _ = _service()

    with pytest.raises(UnreadableInstanceError, match="preamble"):
        service.store_part10(io.BytesIO(b"not dicom at all" * 20), source="STOW")


def test_deflated_data_set_inflating_beyond_the_limit_is_refused() -> None:
    service, blobs, _, _ = _service(limit=100_000)
    ds = _instance("bomb")
    ds.Rows = ds.Columns = 1024
    ds.PixelData = bytes(2 * 1024 * 1024)  # 2 MiB of zeros deflates to a few KiB
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    raw = compressor.compress(_encoded(ds)) + compressor.flush()
    assert len(raw) < 100_000

    with pytest.raises(InstanceTooLargeError, match="inflates beyond"):
        service.store_dataset(
            io.BytesIO(raw), DEFLATED, sop_class_uid=ds.SOPClassUID,
            sop_instance_uid=ds.SOPInstanceUID, source="TEST",
        )  # fmt: skip
    assert list(blobs.keys()) == []
