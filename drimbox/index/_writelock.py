"""One writer at a time on a SQLite file, across threads and processes, without busy sleeps.

SQLite lets one connection write at a time; the others get ``SQLITE_BUSY`` and the busy
handler retries after sleeping 1, 2, 5, 10... ms. Two associations storing instances
concurrently thus spent more time asleep than writing (two associations ingested at half the
rate of one). :class:`WriterLock` queues writers instead: a thread lock orders the threads of a
process, and an exclusive ``flock`` on a lock file next to the database orders the processes
(``drimbox serve --dimse-processes N``); the kernel wakes the next waiter as soon as the lock
is released. The busy timeout stays as a safety net for writers that do not take this lock
(another program opening the file).
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path
from types import TracebackType

__all__ = ["LOCK_SUFFIX", "WriterLock"]

LOCK_SUFFIX = "-writer.lock"
"""Appended to the database file name to name the lock file."""

_LOCK_FILE_MODE = 0o600


class WriterLock:
    """Exclusive lock for write transactions on one SQLite database file.

    Parameters
    ----------
    database
        The database file; the lock file is ``<database>-writer.lock``, created if missing.
    """

    def __init__(self, database: Path) -> None:
        self.path = database.with_name(database.name + LOCK_SUFFIX)
        self._thread_lock = threading.Lock()
        self._fd = os.open(
            self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), _LOCK_FILE_MODE
        )

    def __enter__(self) -> WriterLock:
        self._thread_lock.acquire()
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._thread_lock.release()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()

    def close(self) -> None:
        """Close the lock file (the lock must not be held)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
