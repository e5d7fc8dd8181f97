"""FilesystemBlobStore puts of content held in memory: written in place, durable, all or nothing."""

from __future__ import annotations

import hashlib
import os
import signal
from pathlib import Path

import pytest

from drimbox.errors import StorageFullError
from drimbox.storage import FilesystemBlobStore
from drimbox.storage._background import BACKGROUND_HASH_BYTES
from drimbox.storage._spares import LEASE_SUFFIX
from tests.integration.test_storage_failures import (  # noqa: F401  (fixtures)
    few_inodes_filesystem,
    small_filesystem,
)

pytestmark = pytest.mark.integration

OBJECT_SIZE = 256 * 1024


def test_buffers_are_written_at_the_final_path_without_a_temporary_file(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path)
    buffers = (b"meta", bytearray(b"data set"), memoryview(b"+pixels"), b"")

    blob = store.put(buffers)  # type: ignore[arg-type]  # any bytes-like buffer is written

    path = tmp_path / blob.key[:2] / blob.key
    assert path.read_bytes() == b"metadata set+pixels"
    assert blob.size == 19
    assert blob.sha256 == hashlib.sha256(b"metadata set+pixels").hexdigest()
    assert [name for name in os.listdir(tmp_path / "tmp") if not name.endswith(LEASE_SUFFIX)] == []
    assert list(store.keys()) == [blob.key]


def test_more_buffers_than_one_writev_takes_are_all_written_in_order(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path)
    buffers = [bytes([n % 256]) * (n % 7) for n in range(1000)]

    blob = store.put(buffers)

    assert b"".join(store.stream(blob.key)) == b"".join(buffers)


def test_a_missing_fan_out_directory_is_created_again(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path)
    for directory in (tmp_path / f"{n:02x}" for n in range(256)):
        directory.rmdir()

    blob = store.put([b"x"])

    assert list(store.keys()) == [blob.key]


def test_full_filesystem_fails_the_put_and_leaves_no_partial_object(
    small_filesystem: Path,  # noqa: F811
) -> None:
    store = FilesystemBlobStore(small_filesystem)
    stored: list[str] = []
    with pytest.raises(StorageFullError, match="no space left"):
        for seed in range(32):
            stored.append(store.put([bytes([seed]) * OBJECT_SIZE]).key)

    assert stored, "not even one object fitted"
    assert sorted(store.keys()) == sorted(stored)
    assert all(store.size(key) == OBJECT_SIZE for key in stored)
    store.close()  # removes the unused spare files and their lease
    assert os.listdir(small_filesystem / "tmp") == []
    assert sorted(name for path in small_filesystem.glob("??") for name in os.listdir(path)) == (
        sorted(stored)
    )


def test_no_inode_left_fails_the_put_and_keeps_only_whole_objects(
    few_inodes_filesystem: Path,  # noqa: F811
) -> None:
    store = FilesystemBlobStore(few_inodes_filesystem)
    with pytest.raises(StorageFullError):
        for _ in range(32):
            store.put((b"meta", b"x" * 1020))

    held = list(store.keys())
    assert held, "the spares that could still be created were not used"
    assert all(store.size(key) == 1024 for key in held)
    store.close()  # its spares' descriptors would keep the file system busy


def test_large_content_is_hashed_while_written_and_the_digest_is_exact(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path)
    buffers = (b"meta" * 33, os.urandom(BACKGROUND_HASH_BYTES * 4))

    blobs = [store.put(buffers) for _ in range(3)]

    expected = hashlib.sha256(b"".join(buffers)).hexdigest()
    assert {blob.sha256 for blob in blobs} == {expected}
    assert all(b"".join(store.stream(blob.key)) == b"".join(buffers) for blob in blobs)


def test_a_forked_process_hashes_large_content_on_its_own_threads(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path)
    content = [os.urandom(BACKGROUND_HASH_BYTES * 2)]
    store.put(content)  # the parent's hashing threads now exist
    expected = hashlib.sha256(content[0]).hexdigest()

    child = os.fork()
    if child == 0:  # pragma: no cover - the child process
        signal.alarm(10)  # a hang (threads of the parent) kills the child: the test fails
        os._exit(0 if store.put(content).sha256 == expected else 1)
    _, status = os.waitpid(child, 0)

    assert os.waitstatus_to_exitcode(status) == 0
    assert len(list(store.keys())) == 2
