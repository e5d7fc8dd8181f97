"""IngestService stores the same bytes, metadata and pixel offset whatever stream holds them.

Data sets held in memory are parsed and written without copies; larger ones arriving in files
are parsed and written in chunks. Both paths must give the same result.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
from collections.abc import Callable
from typing import BinaryIO

import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from drimbox.audit import MemoryAuditLog
from drimbox.dicom.part10 import encode_file_meta
from drimbox.dicom.synthetic import SyntheticStudy, make_instance
from drimbox.index import MemoryIndex
from drimbox.model import StoreResult
from drimbox.services import ingest as ingest_module
from drimbox.services.ingest import IngestService
from drimbox.storage import MemoryBlobStore

EXPLICIT = "1.2.840.10008.1.2.1"
OFFSET = 100  # the data set starts here in the stream


def _encoded(ds: Dataset) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_dataset(buffer, ds)
    return buffer.getvalue()


def _bytes_io(raw: bytes) -> BinaryIO:
    stream = io.BytesIO(b"\xff" * OFFSET + raw)
    stream.seek(OFFSET)
    return stream


def _file(raw: bytes) -> BinaryIO:
    stream = tempfile.TemporaryFile()  # noqa: SIM115  (closed by the test)
    stream.write(b"\xff" * OFFSET + raw)
    stream.seek(OFFSET)
    return stream


def _store(ds: Dataset, stream: BinaryIO) -> tuple[StoreResult, bytes, MemoryIndex]:
    blobs, index = MemoryBlobStore(), MemoryIndex()
    service = IngestService(blobs, index, MemoryAuditLog(), max_instance_bytes=1 << 30)
    with stream:
        result = service.store_dataset(
            stream, EXPLICIT, sop_class_uid=ds.SOPClassUID, sop_instance_uid=ds.SOPInstanceUID,
            source="TEST@127.0.0.1",
        )  # fmt: skip
    return result, b"".join(blobs.stream(result.location.blob.key)), index


@pytest.mark.parametrize("make_stream", [_bytes_io, _file], ids=["bytes-io", "file"])
def test_a_data_set_after_other_bytes_is_stored_from_its_first_byte(
    make_stream: Callable[[bytes], BinaryIO],
) -> None:
    ds = make_instance(SyntheticStudy(seed="streams"), 0, 0)
    raw = _encoded(ds)

    result, stored, index = _store(ds, make_stream(raw))

    assert stored == encode_file_meta(ds.SOPClassUID, ds.SOPInstanceUID, EXPLICIT) + raw
    assert result.location.blob.sha256 == hashlib.sha256(stored).hexdigest()
    assert result.location.pixel_data_offset is not None
    assert stored[result.location.pixel_data_offset :] == ds.PixelData
    [metadata] = index.metadata(ds.StudyInstanceUID)
    assert metadata["00080018"]["Value"] == [ds.SOPInstanceUID]


def test_a_data_set_too_large_to_hold_in_memory_gives_the_same_result_in_chunks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ds = make_instance(SyntheticStudy(seed="large", rows=256, columns=256), 0, 0)
    raw = _encoded(ds)
    in_memory, stored_in_memory, memory_index = _store(ds, _file(raw))
    monkeypatch.setattr(ingest_module, "_IN_MEMORY_MAX_BYTES", len(raw) // 2)

    in_chunks, stored_in_chunks, chunks_index = _store(ds, _file(raw))

    assert stored_in_chunks == stored_in_memory
    assert in_chunks.location.blob.sha256 == in_memory.location.blob.sha256
    assert in_chunks.location.pixel_data_offset == in_memory.location.pixel_data_offset
    assert chunks_index.get_instance(ds.SOPInstanceUID) is not None
    assert list(chunks_index.metadata(ds.StudyInstanceUID)) == list(
        memory_index.metadata(ds.StudyInstanceUID)
    )
