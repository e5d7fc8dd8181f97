"""FilesystemBlobStore specifics: layout, permissions, temporary files, descriptors, errors."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from drimbox.errors import StorageUnavailableError
from drimbox.storage import FilesystemBlobStore
from drimbox.storage._spares import LEASE_SUFFIX
from drimbox.storage.filesystem import TEMPORARY_SUFFIX


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_objects_are_fanned_out_by_key_and_readable_only_by_the_owner(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path / "blobs")
    key = store.put([b"pixel data"]).key

    path = tmp_path / "blobs" / key[:2] / key
    assert path.read_bytes() == b"pixel data"
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    fan_out_directories = [p for p in (tmp_path / "blobs").iterdir() if p.name != "tmp"]
    assert len(fan_out_directories) == 256  # all created when the store opened
    assert mode(tmp_path / "blobs") == 0o700
    assert mode(tmp_path / "blobs" / "tmp") == 0o700
    store.close()  # removes the unused spare files and their lease
    assert os.listdir(tmp_path / "blobs" / "tmp") == []
    assert [p for p in (tmp_path / "blobs").glob("??/*")] == [path]


def test_keys_ignore_temporary_and_foreign_files(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path)
    key = store.put([b"x"]).key
    misplaced = "ff" + key[2:] if not key.startswith("ff") else "00" + key[2:]
    (tmp_path / key[:2] / misplaced).write_bytes(b"wrong directory")
    (tmp_path / key[:2] / "README").write_bytes(b"")
    (tmp_path / "tmp" / f"{'1' * 32}{TEMPORARY_SUFFIX}").write_bytes(b"partial")
    (tmp_path / "zz" / "zz").mkdir(parents=True)
    (tmp_path / "zz" / "zz" / ("2" * 32)).write_bytes(b"not in a hex directory")
    (tmp_path / "lost+found").mkdir()

    assert list(store.keys()) == [key]


def test_cleanup_temporary_removes_stale_files_and_spares_puts_in_progress(
    tmp_path: Path,
) -> None:
    store = FilesystemBlobStore(tmp_path)
    stale = tmp_path / "tmp" / f"{'a' * 32}{TEMPORARY_SUFFIX}"
    fresh = tmp_path / "tmp" / f"{'b' * 32}{TEMPORARY_SUFFIX}"
    stale.write_bytes(b"left by a crash")
    fresh.write_bytes(b"being written")
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    kept = store.put([b"stored"]).key
    (lease,) = (tmp_path / "tmp").glob(f"*{LEASE_SUFFIX}")
    os.utime(lease, (two_hours_ago, two_hours_ago))

    assert store.cleanup_temporary(stale_after_seconds=3600) == 1
    assert not stale.exists()
    assert fresh.exists()
    assert store.cleanup_temporary(stale_after_seconds=0) == 1
    assert [name for name in os.listdir(tmp_path / "tmp")] == [lease.name]  # a running process's
    assert list(store.keys()) == [kept]


def test_a_chunk_that_is_not_bytes_fails_the_put_and_leaves_nothing(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path)
    with pytest.raises(TypeError):
        store.put([b"ok", "not bytes"])  # type: ignore[list-item]
    assert list(store.keys()) == []
    assert os.listdir(tmp_path / "tmp") == []


def test_stream_releases_its_descriptor_when_exhausted_or_closed(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path)
    key = store.put([b"x" * 10_000]).key
    baseline = open_descriptors()

    chunks = store.stream(key, chunk_size=1000)
    assert open_descriptors() == baseline + 1
    assert len(list(chunks)) == 10
    assert open_descriptors() == baseline

    abandoned = store.stream(key, chunk_size=1000)
    assert next(abandoned) == b"x" * 1000
    abandoned.close()  # type: ignore[attr-defined]
    assert open_descriptors() == baseline
    assert list(abandoned) == []


def test_stream_refuses_a_non_positive_chunk_size(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path)
    key = store.put([b"x"]).key
    with pytest.raises(ValueError, match="chunk_size"):
        store.stream(key, chunk_size=0)


def test_a_root_that_cannot_be_created_is_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")
    with pytest.raises(StorageUnavailableError, match="open blob store"):
        FilesystemBlobStore(blocker / "blobs")


def test_losing_the_root_under_a_running_store_is_unavailable_not_missing(
    tmp_path: Path,
) -> None:
    store = FilesystemBlobStore(tmp_path / "blobs")
    (tmp_path / "blobs" / "tmp").rmdir()

    def one_chunk() -> Iterator[bytes]:
        yield b"x"

    with pytest.raises(StorageUnavailableError):
        store.put(one_chunk())
