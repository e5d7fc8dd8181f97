"""FilesystemBlobStore spare files: one sync per put, invisible, never left behind."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from drimbox.errors import StorageFullError
from drimbox.storage import FilesystemBlobStore
from drimbox.storage._spares import BATCH_SIZE, LEASE_SUFFIX, SPARE_MODE
from tests.integration.test_storage_buffers import OBJECT_SIZE
from tests.integration.test_storage_failures import small_filesystem  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration

HOLDER = """
import sys
from pathlib import Path
from drimbox.storage import FilesystemBlobStore
store = FilesystemBlobStore(Path(sys.argv[1]))
for _ in range(int(sys.argv[2])):
    key = store.put([b"held by a process"]).key
print(key, flush=True)
if sys.stdin.readline().strip() == "close":
    store.close()
"""


def spare_files(root: Path) -> list[Path]:
    """The unused spares under ``root``: empty files with the spares' mode."""
    return [
        path
        for path in root.glob("??/*")
        if stat.S_IMODE(path.stat().st_mode) == SPARE_MODE and path.stat().st_size == 0
    ]


def leases(root: Path) -> list[Path]:
    return list((root / "tmp").glob(f"*{LEASE_SUFFIX}"))


def start_holder(root: Path, puts: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(root), str(puts)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Another process with the store open, one object put; yields it and the object's key."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path), "1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    key = process.stdout.readline().strip()
    with process:  # closes the pipes
        try:
            yield process, key
        finally:
            process.kill()


def test_a_put_syncs_its_file_once_after_its_directory_entry_was_synced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FilesystemBlobStore(tmp_path)
    events: list[tuple[str, str]] = []  # ("sync", path) and ("put", key), in order
    lock = threading.Lock()
    real_fsync = os.fsync

    def observed_fsync(fd: int) -> None:
        real_fsync(fd)
        with lock:
            events.append(("sync", os.readlink(f"/proc/self/fd/{fd}")))

    monkeypatch.setattr(os, "fsync", observed_fsync)
    keys = []
    for number in range(2 * BATCH_SIZE):
        keys.append(store.put([b"object %d" % number]).key)
        with lock:
            events.append(("put", keys[-1]))

    syncs = [path for kind, path in events if kind == "sync"]
    directories = {str(tmp_path / key[:2]) for key in keys}
    assert len(directories) == 2  # one fan-out directory per batch of spares
    assert sorted(path for path in syncs if path in directories) == sorted(directories)
    for key in keys:
        path = str(tmp_path / key[:2] / key)
        assert syncs.count(path) == 1
        put = events.index(("put", key))
        assert events.index(("sync", path)) < put
        assert events.index(("sync", str(tmp_path / key[:2]))) < put
    for key in keys:
        assert b"".join(store.stream(key)).startswith(b"object ")


def test_spares_are_not_objects_and_close_removes_them(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path)
    key = store.put([b"object"]).key

    assert len(spare_files(tmp_path)) == BATCH_SIZE - 1
    assert list(store.keys()) == [key]
    assert stat.S_IMODE((tmp_path / key[:2] / key).stat().st_mode) == 0o600
    store.close()
    assert spare_files(tmp_path) == []
    assert leases(tmp_path) == []
    assert list(FilesystemBlobStore(tmp_path).keys()) == [key]


def test_a_running_process_keeps_its_spares_and_removes_them_when_it_closes(
    tmp_path: Path, holder: tuple[subprocess.Popen[str], str]
) -> None:
    process, key = holder
    assert len(spare_files(tmp_path)) == BATCH_SIZE - 1

    store = FilesystemBlobStore(tmp_path)  # another process opens the store meanwhile
    assert store.cleanup_temporary(stale_after_seconds=0) == 0
    assert len(spare_files(tmp_path)) == BATCH_SIZE - 1
    assert len(leases(tmp_path)) == 1

    assert process.stdin is not None
    process.stdin.write("close\n")
    process.stdin.close()
    assert process.wait(timeout=30) == 0
    assert spare_files(tmp_path) == []
    assert leases(tmp_path) == []
    assert list(store.keys()) == [key]


def test_the_spares_of_a_killed_process_are_removed_when_the_store_opens(
    tmp_path: Path, holder: tuple[subprocess.Popen[str], str]
) -> None:
    process, key = holder
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert len(spare_files(tmp_path)) == BATCH_SIZE - 1

    store = FilesystemBlobStore(tmp_path)

    assert spare_files(tmp_path) == []
    assert leases(tmp_path) == []
    assert list(store.keys()) == [key]
    assert b"".join(store.stream(key)) == b"held by a process"


def test_a_put_that_finds_the_disk_full_removes_its_spare(
    small_filesystem: Path,  # noqa: F811
) -> None:
    store = FilesystemBlobStore(small_filesystem)
    descriptors_before = len(os.listdir("/proc/self/fd"))
    stored: list[str] = []
    with pytest.raises(StorageFullError):
        for seed in range(BATCH_SIZE):
            stored.append(store.put([bytes([seed]) * OBJECT_SIZE]).key)

    spares = {path.name for path in spare_files(small_filesystem)}
    assert 0 < len(stored) < BATCH_SIZE - 1  # all from the first batch
    assert len(spares) == BATCH_SIZE - len(stored) - 1  # the failed put's spare is gone
    assert {path.name for path in small_filesystem.glob("??/*")} == set(stored) | spares
    assert all(store.size(key) == OBJECT_SIZE for key in stored)
    # Open: the lease and the unused spares; the objects' and the failed spare's are closed.
    assert len(os.listdir("/proc/self/fd")) == descriptors_before + 1 + len(spares)
    store.close()


def test_the_lease_of_a_long_running_process_stays_small(tmp_path: Path) -> None:
    with start_holder(tmp_path, 3 * BATCH_SIZE + 1) as process:  # four batches
        assert process.stdout is not None
        process.stdout.readline()
        (lease,) = leases(tmp_path)
        listed = lease.read_text().split()
        assert len(listed) == 2 * BATCH_SIZE  # the current batch and the one before
        assert {path.name for path in spare_files(tmp_path)} < set(listed)
        assert len(spare_files(tmp_path)) == BATCH_SIZE - 1
        process.kill()

    store = FilesystemBlobStore(tmp_path)
    assert spare_files(tmp_path) == []
    assert len(list(store.keys())) == 3 * BATCH_SIZE + 1
