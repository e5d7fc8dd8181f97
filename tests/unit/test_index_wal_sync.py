"""SQLite index durability: each write syncs the WAL after its commit, outside the write lock.

The sync calls are observed by wrapping ``os.fdatasync`` / ``os.fsync`` (they still run); a
failing sync is injected the same way, since a real I/O error cannot be produced on demand.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from drimbox.errors import IndexUnavailableError
from drimbox.index import SqliteIndex
from drimbox.index._writelock import LOCK_SUFFIX
from drimbox.index.sqlite import WAL_SUFFIX
from drimbox.model import AddOutcome
from tests.contract.test_index import record


class SyncLog:
    """What was synced: ``(kind, inode, write lock free)`` per call, ``kind`` file or dir."""

    def __init__(self, database: Path) -> None:
        self.calls: list[tuple[str, int, bool]] = []
        self._lock_file = database.with_name(database.name + LOCK_SUFFIX)

    def record(self, fd: int) -> None:
        status = os.fstat(fd)
        kind = "dir" if stat.S_ISDIR(status.st_mode) else "file"
        self.calls.append((kind, status.st_ino, self._lock_is_free()))

    def _lock_is_free(self) -> bool:
        probe = os.open(self._lock_file, os.O_RDWR)
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        finally:
            os.close(probe)  # closing releases a lock taken by the probe
        return True


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return tmp_path / "index.sqlite3"


@pytest.fixture
def syncs(database: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SyncLog]:
    log = SyncLog(database)

    def observed(real: Callable[[int], None]) -> Callable[[int], None]:
        def sync(fd: int) -> None:
            log.record(fd)
            real(fd)

        return sync

    monkeypatch.setattr(os, "fdatasync", observed(os.fdatasync))
    monkeypatch.setattr(os, "fsync", observed(os.fsync))
    yield log


def _wal_inode(database: Path) -> int:
    return (database.with_name(database.name + WAL_SUFFIX)).stat().st_ino


def test_each_write_syncs_the_wal_once_committed_with_the_write_lock_released(
    database: Path, syncs: SyncLog
) -> None:
    index = SqliteIndex(database)
    syncs.calls.clear()

    assert index.add_instance(record("1.2.3.1.1")) is AddOutcome.STORED
    assert index.add_instance(record("1.2.3.1.1")) is AddOutcome.DUPLICATE
    assert index.remove_instance("1.2.3.1.1") is not None
    assert index.reject_instances(["1.2.3.1.9"]) == 0

    wal = _wal_inode(database)
    file_syncs = [call for call in syncs.calls if call[0] == "file"]
    assert file_syncs == [("file", wal, True)] * 4  # add, duplicate, remove, reject
    index.close()


def test_a_new_wal_has_its_directory_entry_synced_once(database: Path, syncs: SyncLog) -> None:
    index = SqliteIndex(database)  # the schema migration writes: the WAL is created
    index.add_instance(record("1.2.3.1.1"))
    index.add_instance(record("1.2.3.1.2"))

    directory = database.parent.stat().st_ino
    assert [call for call in syncs.calls if call[0] == "dir"] == [("dir", directory, True)]
    index.close()


def test_an_add_whose_wal_sync_fails_is_refused_and_taken_back(
    database: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = SqliteIndex(database)
    index.add_instance(record("1.2.3.1.1"))
    real = os.fdatasync

    def failing(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fdatasync", failing)
    with pytest.raises(IndexUnavailableError, match="could not be made durable"):
        index.add_instance(record("1.2.3.1.2"))
    monkeypatch.setattr(os, "fdatasync", real)

    assert index.get_instance("1.2.3.1.2") is None  # nothing half-visible
    assert index.get_instance("1.2.3.1.1") is not None  # the others are untouched
    assert index.statistics().instances == 1
    index.close()
