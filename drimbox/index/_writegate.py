"""A queue for the writers of one SQLite file: its threads, and its processes.

SQLite lets one writer in at a time; a writer that finds the file locked sleeps and tries again
(its busy handler sleeps 1, 2, 5, 10 ... then 100 ms at a time). With several writers (ingest
threads, ``drimbox serve --dimse-processes N``) an add that takes half a millisecond then often
waits tens or hundreds of milliseconds: measured with 4 threads, a p99 of 29 ms and a maximum
of one second per add. The gate makes them queue instead: a lock shared by the index's threads,
then an exclusive ``flock`` on a file beside the database, taken by polling at most every
millisecond. Both waits are bounded by the busy timeout; a writer that times out goes ahead,
and SQLite's own locking (which the gate only orders, never replaces) decides as before.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["LOCK_FILE_SUFFIX", "WriteGate"]

LOCK_FILE_SUFFIX = "-writers.lock"
"""Suffix of the lock file, beside the database file (as SQLite's ``-wal`` and ``-shm``)."""

_FIRST_POLL = 0.000_05
_LAST_POLL = 0.001
"""Seconds between two tries of a locked file (doubling from the first to the last)."""

_LOCK_FILE_MODE = 0o600


class WriteGate:
    """Orders the write transactions of one SQLite file.

    Parameters
    ----------
    database
        The database file.
    timeout
        Seconds a writer waits in the gate before going ahead anyway.
    """

    def __init__(self, database: Path, timeout: float) -> None:
        self._path = database.with_name(database.name + LOCK_FILE_SUFFIX)
        self._timeout = timeout
        self._threads = threading.Lock()
        self._descriptor: int | None = None
        self._pid = os.getpid()

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Wait for the other writers of this file, then let the caller write."""
        if self._pid != os.getpid():
            self._forked()
        deadline = time.monotonic() + self._timeout
        if not self._threads.acquire(timeout=self._timeout):
            yield
            return
        try:
            descriptor = self._file()
            if descriptor is None or not _lock(descriptor, deadline):
                yield
                return
            try:
                yield
            finally:
                fcntl.flock(descriptor, fcntl.LOCK_UN)
        finally:
            self._threads.release()

    def _forked(self) -> None:
        """In a child process: the parent's thread lock and open file are not ours.

        A descriptor inherited across ``fork`` shares its ``flock`` with the parent's, and the
        thread lock may have been held by a thread the child does not have.
        """
        self._threads = threading.Lock()
        self._descriptor = None
        self._pid = os.getpid()

    def _file(self) -> int | None:
        """The lock file's descriptor (opened once); ``None`` if it cannot be opened."""
        if self._descriptor is None:
            try:
                self._descriptor = os.open(
                    self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, _LOCK_FILE_MODE
                )
            except OSError:
                return None
        return self._descriptor

    def close(self) -> None:
        """Close the lock file (the gate opens it again if used after)."""
        with self._threads:
            if self._descriptor is not None and self._pid == os.getpid():
                os.close(self._descriptor)
            self._descriptor = None


def _lock(descriptor: int, deadline: float) -> bool:
    delay = _FIRST_POLL
    while True:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, _LAST_POLL)
        else:
            return True
