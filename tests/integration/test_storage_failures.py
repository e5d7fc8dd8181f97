"""Blob stores under real failures: a full filesystem (small tmpfs) and a dead S3 server.

The DIMSE-level consequences of the same failures are tested with the box (``dimse`` tests);
here the store itself must fail cleanly: the right error, quickly, nothing half-visible, and
service resumes once the cause is gone.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from drimbox.errors import BlobNotFoundError, StorageFullError, StorageUnavailableError
from drimbox.storage import FilesystemBlobStore
from drimbox.storage.s3 import MIN_PART_SIZE, S3BlobStore
from tests.fixtures.seaweedfs import SeaweedFS

pytestmark = pytest.mark.integration

TMPFS_SIZE = "2m"
OBJECT_SIZE = 256 * 1024
MAX_PUTS = 32  # 2 MiB / 256 KiB = 8: the loop must hit the limit long before this
OUTAGE_DEADLINE_SECONDS = 5.0


def mount_tmpfs(mountpoint: Path, options: str) -> None:
    """Mount a tmpfs (we run as root; a failure here is a test failure, never a skip)."""
    mountpoint.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"{options},mode=0700", "tmpfs", str(mountpoint)],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, unmounted afterwards."""
    mountpoint = tmp_path / "small"
    mount_tmpfs(mountpoint, f"size={TMPFS_SIZE}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True, capture_output=True)


@pytest.fixture
def few_inodes_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs with room for bytes but inodes for the fan-out directories and a handful of
    blobs only, unmounted afterwards."""
    mountpoint = tmp_path / "few-inodes"
    mount_tmpfs(mountpoint, "size=8m,nr_inodes=266")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True, capture_output=True)


def content(seed: int, size: int = OBJECT_SIZE) -> Iterator[bytes]:
    """A stream of ``size`` bytes in 64 KiB chunks."""
    chunk = bytes([seed % 256]) * (64 * 1024)
    for start in range(0, size, len(chunk)):
        yield chunk[: size - start]


def fill_until_full(store: FilesystemBlobStore) -> list[str]:
    """Put objects until the store reports it is full; return the keys stored before that."""
    stored: list[str] = []
    for seed in range(MAX_PUTS):
        try:
            stored.append(store.put(content(seed)).key)
        except StorageFullError:
            return stored
    pytest.fail(f"{MAX_PUTS} puts of {OBJECT_SIZE} bytes never filled a {TMPFS_SIZE} tmpfs")


def test_full_filesystem_raises_storage_full_and_leaves_nothing_half_visible(
    small_filesystem: Path,
) -> None:
    store = FilesystemBlobStore(small_filesystem)
    stored = fill_until_full(store)

    assert stored, "not even one object fitted"
    assert sorted(store.keys()) == sorted(stored)
    assert os.listdir(small_filesystem / "tmp") == []
    for key in stored:
        assert store.size(key) == OBJECT_SIZE
    with pytest.raises(StorageFullError, match="no space left"):
        store.put(content(99, size=4 * OBJECT_SIZE))
    assert os.listdir(small_filesystem / "tmp") == []


def test_full_filesystem_accepts_puts_again_after_deleting(small_filesystem: Path) -> None:
    store = FilesystemBlobStore(small_filesystem)
    stored = fill_until_full(store)
    store.delete(stored[0])
    store.delete(stored[1])

    again = store.put(content(7))

    assert again.size == OBJECT_SIZE
    assert b"".join(store.stream(again.key)) == b"".join(content(7))
    assert sorted(store.keys()) == sorted([*stored[2:], again.key])


def test_no_inode_left_raises_storage_full(few_inodes_filesystem: Path) -> None:
    store = FilesystemBlobStore(few_inodes_filesystem)
    with pytest.raises(StorageFullError):
        for seed in range(MAX_PUTS):
            store.put(content(seed, size=1024))
    assert os.listdir(few_inodes_filesystem / "tmp") == []
    held = list(store.keys())
    assert all(store.size(key) == 1024 for key in held)


def s3_store(server: SeaweedFS, bucket: str) -> S3BlobStore:
    return S3BlobStore(
        server.endpoint,
        server.access_key,
        server.secret_key,
        bucket,
        secure=False,
        region=server.region,
        part_size=MIN_PART_SIZE,
    )


def test_dead_s3_server_fails_fast_and_service_resumes_after_restart(
    seaweedfs: SeaweedFS, s3_bucket: str
) -> None:
    store = s3_store(seaweedfs, s3_bucket)
    before = store.put(content(1))
    seaweedfs.stop()
    try:
        for operation in (
            lambda: store.put(content(2)),
            lambda: store.size(before.key),
            lambda: store.stream(before.key),
            lambda: store.read_range(before.key, 0, 10),
            lambda: list(store.keys()),
            lambda: s3_store(seaweedfs, s3_bucket),
        ):
            started = time.monotonic()
            with pytest.raises(StorageUnavailableError, match="unreachable"):
                operation()
            assert time.monotonic() - started < OUTAGE_DEADLINE_SECONDS
    finally:
        seaweedfs.start()

    after = store.put(content(3))
    assert b"".join(store.stream(after.key)) == b"".join(content(3))
    assert b"".join(store.stream(before.key)) == b"".join(content(1))
    assert set(store.keys()) == {before.key, after.key}
    store.close()


def test_s3_server_dying_mid_multipart_put_leaves_no_key_visible(
    seaweedfs: SeaweedFS, s3_bucket: str
) -> None:
    store = s3_store(seaweedfs, s3_bucket)
    before = store.put(content(1))

    def dies_midway() -> Iterator[bytes]:
        # The first part (MIN_PART_SIZE) is uploaded while the second is being read.
        yield from content(5, size=MIN_PART_SIZE + OBJECT_SIZE)
        seaweedfs.stop()
        yield from content(6, size=OBJECT_SIZE)

    try:
        with pytest.raises(StorageUnavailableError):
            store.put(dies_midway())
    finally:
        seaweedfs.start()
    assert list(store.keys()) == [before.key]
    with pytest.raises(BlobNotFoundError):
        store.size("0" * 32)
    assert store.cleanup_temporary(stale_after_seconds=3600) == 0  # too recent: may be running
    assert store.cleanup_temporary(stale_after_seconds=0) == 1  # the interrupted upload's parts
    assert store.cleanup_temporary(stale_after_seconds=0) == 0
    assert list(store.keys()) == [before.key]
    store.close()
