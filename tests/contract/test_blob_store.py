"""The BlobStore contract, checked against every adapter: memory, filesystem and SeaweedFS S3.

One suite, so that "S3 behaves like the filesystem" is a checked fact (STYLE §3).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from drimbox.errors import BlobNotFoundError
from drimbox.model import StoredBlob
from drimbox.ports import BlobStore
from drimbox.storage import FilesystemBlobStore, MemoryBlobStore
from drimbox.storage._spares import LEASE_SUFFIX
from drimbox.storage.keys import KEY_PATTERN
from drimbox.storage.s3 import MIN_PART_SIZE, S3BlobStore
from tests.fixtures.seaweedfs import SeaweedFS

ADAPTERS = ("memory", "filesystem", "s3")
CHUNK = 64 * 1024
OVER_ONE_PART = MIN_PART_SIZE + 1  # two S3 parts at the smallest part size
UID = "1.2.826.0.1.3680043.8.498.12345678901234567890"
CRAFTED_KEYS = (
    "../x",
    "../../etc/passwd",
    "/etc/passwd",
    UID,
    "",
    "ab/cd/" + "0" * 32,
    "0" * 31,
    "0" * 33,
    "A" * 32,
    "0" * 31 + "\n",
    "0" * 30 + "/.",
)


class SourceFailedError(RuntimeError):
    """Raised by a test's chunk source, to be told from any storage error."""


def chunked(data: bytes, size: int = CHUNK) -> Iterator[bytes]:
    """Yield ``data`` as a stream of chunks (what a DIMSE receiver would hand over)."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


def pattern(length: int, seed: int = 0) -> bytes:
    """Deterministic, non-repeating-looking content of ``length`` bytes."""
    block = hashlib.sha256(seed.to_bytes(8, "big")).digest() * 2048
    return (block * (length // len(block) + 1))[:length]


@pytest.fixture(params=ADAPTERS)
def blob_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    """Each adapter in turn; S3 on a fresh bucket with the smallest part size."""
    store: BlobStore
    if request.param == "memory":
        store = MemoryBlobStore()
    elif request.param == "filesystem":
        store = FilesystemBlobStore(tmp_path / "blobs")
    else:
        server: SeaweedFS = request.getfixturevalue("seaweedfs")
        bucket: str = request.getfixturevalue("s3_bucket")
        store = S3BlobStore(
            server.endpoint,
            server.access_key,
            server.secret_key,
            bucket,
            secure=False,
            region=server.region,
            part_size=MIN_PART_SIZE,
        )
    yield store
    store.close()


def test_adapter_satisfies_the_blob_store_port(blob_store: BlobStore) -> None:
    assert isinstance(blob_store, BlobStore)


@pytest.mark.parametrize("length", [0, 1, CHUNK + 7, OVER_ONE_PART], ids=lambda n: f"{n}B")
def test_put_then_stream_returns_the_same_bytes_size_and_sha256(
    blob_store: BlobStore, length: int
) -> None:
    data = pattern(length)
    stored = blob_store.put(chunked(data))
    assert stored == StoredBlob(stored.key, length, hashlib.sha256(data).hexdigest())
    assert b"".join(blob_store.stream(stored.key)) == data
    assert blob_store.size(stored.key) == length


def test_stream_chunks_never_exceed_the_chunk_size(blob_store: BlobStore) -> None:
    data = pattern(10_000)
    stored = blob_store.put([data])
    chunks = list(blob_store.stream(stored.key, chunk_size=999))
    assert b"".join(chunks) == data
    assert all(0 < len(chunk) <= 999 for chunk in chunks)


def test_put_accepts_chunks_of_any_size_including_empty_ones(blob_store: BlobStore) -> None:
    parts = [b"", b"a", b"", pattern(3 * CHUNK + 1), b"z"]
    stored = blob_store.put(iter(parts))
    assert b"".join(blob_store.stream(stored.key)) == b"".join(parts)


def test_keys_are_opaque_and_unique_even_for_identical_content(blob_store: BlobStore) -> None:
    first = blob_store.put([UID.encode()])
    second = blob_store.put([UID.encode()])
    assert first.key != second.key
    assert first.sha256 == second.sha256
    for key in (first.key, second.key):
        assert KEY_PATTERN.fullmatch(key)
        assert UID not in key


def test_read_range_returns_exact_bytes_and_fewer_at_the_end(blob_store: BlobStore) -> None:
    data = pattern(1000)
    key = blob_store.put([data]).key
    assert blob_store.read_range(key, 0, 1000) == data
    assert blob_store.read_range(key, 0, 1) == data[:1]
    assert blob_store.read_range(key, 132, 300) == data[132:432]
    assert blob_store.read_range(key, 999, 1) == data[999:]
    assert blob_store.read_range(key, 990, 100) == data[990:]
    assert blob_store.read_range(key, 500, 0) == b""
    assert blob_store.read_range(key, 1000, 10) == b""
    assert blob_store.read_range(key, 5000, 10) == b""
    assert blob_store.read_range(key, 10, 1 << 40) == data[10:]


def test_read_range_of_an_empty_object_is_empty(blob_store: BlobStore) -> None:
    key = blob_store.put([]).key
    assert blob_store.read_range(key, 0, 10) == b""
    assert blob_store.size(key) == 0


def test_read_range_refuses_negative_offset_or_length(blob_store: BlobStore) -> None:
    key = blob_store.put([b"abc"]).key
    with pytest.raises(ValueError, match="invalid range"):
        blob_store.read_range(key, -1, 1)
    with pytest.raises(ValueError, match="invalid range"):
        blob_store.read_range(key, 0, -1)


def test_delete_removes_the_object_and_is_idempotent(blob_store: BlobStore) -> None:
    kept = blob_store.put([b"kept"])
    gone = blob_store.put([b"gone"])
    blob_store.delete(gone.key)
    blob_store.delete(gone.key)
    with pytest.raises(BlobNotFoundError):
        blob_store.size(gone.key)
    assert b"".join(blob_store.stream(kept.key)) == b"kept"


MISSING_KEY_OPERATIONS: dict[str, Callable[[BlobStore, str], object]] = {
    "stream": lambda store, key: store.stream(key),
    "read_range": lambda store, key: store.read_range(key, 0, 10),
    "read_range_empty": lambda store, key: store.read_range(key, 0, 0),
    "size": lambda store, key: store.size(key),
}


@pytest.mark.parametrize("operation", MISSING_KEY_OPERATIONS)
def test_missing_key_raises_blob_not_found(blob_store: BlobStore, operation: str) -> None:
    key = blob_store.put([b"x"]).key
    blob_store.delete(key)
    with pytest.raises(BlobNotFoundError):
        MISSING_KEY_OPERATIONS[operation](blob_store, key)


def test_keys_lists_exactly_what_is_stored(blob_store: BlobStore) -> None:
    assert list(blob_store.keys()) == []
    stored = {blob_store.put([pattern(100, seed)]).key for seed in range(5)}
    removed = sorted(stored)[2]
    blob_store.delete(removed)
    assert set(blob_store.keys()) == stored - {removed}
    assert len(list(blob_store.keys())) == len(stored) - 1


def test_concurrent_puts_from_eight_threads_all_succeed(blob_store: BlobStore) -> None:
    threads_count, puts_per_thread = 8, 4
    results: dict[int, StoredBlob] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(threads_count)

    def worker(thread_index: int) -> None:
        try:
            start.wait()
            for n in range(puts_per_thread):
                seed = thread_index * puts_per_thread + n
                stored = blob_store.put(chunked(pattern(20_000 + seed, seed), 4096))
                with lock:
                    results[seed] = stored
        except BaseException as exc:  # reported below, in the test's thread
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len({stored.key for stored in results.values()}) == threads_count * puts_per_thread
    for seed, stored in results.items():
        assert b"".join(blob_store.stream(stored.key)) == pattern(20_000 + seed, seed)
    assert set(blob_store.keys()) == {stored.key for stored in results.values()}


@pytest.mark.parametrize("failing_after", [0, CHUNK * 3, OVER_ONE_PART + CHUNK], ids=str)
def test_a_source_that_fails_mid_put_leaves_no_key_visible(
    blob_store: BlobStore, failing_after: int
) -> None:
    before = blob_store.put([b"before"])

    def failing_source() -> Iterator[bytes]:
        yield from chunked(pattern(failing_after))
        raise SourceFailedError("association aborted")

    with pytest.raises(SourceFailedError, match="association aborted"):
        blob_store.put(failing_source())
    assert list(blob_store.keys()) == [before.key]
    if isinstance(blob_store, FilesystemBlobStore):
        leftovers = os.listdir(blob_store.root / "tmp")
        assert [name for name in leftovers if not name.endswith(LEASE_SUFFIX)] == []


@pytest.mark.parametrize("key", CRAFTED_KEYS, ids=repr)
def test_keys_not_made_by_the_store_are_refused(blob_store: BlobStore, key: str) -> None:
    blob_store.put([b"content"])
    for operation in MISSING_KEY_OPERATIONS.values():
        with pytest.raises(BlobNotFoundError, match="not a blob key"):
            operation(blob_store, key)
    with pytest.raises(BlobNotFoundError, match="not a blob key"):
        blob_store.delete(key)


def test_filesystem_never_touches_a_file_outside_its_root(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path / "blobs")
    victim = tmp_path / "victim"
    victim.write_bytes(b"do not delete")
    for key in ("../victim", str(victim), "ab/../../victim"):
        with pytest.raises(BlobNotFoundError):
            store.delete(key)
        with pytest.raises(BlobNotFoundError):
            store.read_range(key, 0, 5)
    assert victim.read_bytes() == b"do not delete"


def test_a_huge_chunk_size_is_served_in_bounded_chunks(blob_store: BlobStore) -> None:
    data = pattern(OVER_ONE_PART)
    key = blob_store.put(chunked(data)).key
    assert b"".join(blob_store.stream(key, chunk_size=1 << 40)) == data


def test_write_is_readable_at_once_and_durable_after_waiting(blob_store: BlobStore) -> None:
    data = pattern(CHUNK + 3)
    pending = blob_store.write([data[:100], data[100:]])
    stored = pending.stored()
    assert stored == StoredBlob(stored.key, len(data), hashlib.sha256(data).hexdigest())
    assert b"".join(blob_store.stream(stored.key)) == data
    assert pending.wait_durable() == stored
    assert stored.key in set(blob_store.keys())


def test_a_discarded_write_leaves_nothing(blob_store: BlobStore) -> None:
    pending = blob_store.write([pattern(1000)])
    key = pending.stored().key
    pending.discard()
    assert key not in set(blob_store.keys())
    with pytest.raises(BlobNotFoundError):
        blob_store.size(key)
    pending.discard()  # twice is harmless


def test_write_of_a_stream_is_durable_when_it_returns(blob_store: BlobStore) -> None:
    data = pattern(3 * CHUNK)
    pending = blob_store.write(chunked(data))
    assert b"".join(blob_store.stream(pending.stored().key)) == data
    assert pending.wait_durable().size == len(data)
