"""One writer at a time on a SQLite file, across threads and processes, without busy sleeps.

SQLite lets one connection write at a time; the others get ``SQLITE_BUSY`` and the busy
handler retries after sleeping 1, 2, 5, 10... up to 100 ms. Two associations storing instances
concurrently thus spent more time asleep than writing (two associations ingested at half the
rate of one; four threads adding to one file: a p99 of 29 ms and a maximum of one second per
add, which takes half a millisecond). :class:`WriterLock` queues writers instead: a thread lock
orders the threads of a process, and an exclusive ``flock`` on a lock file next to the database
orders the processes (``drimbox serve --dimse-processes N``). The busy timeout stays as a
safety net for writers that do not take this lock (another program opening the file).

With a ``timeout``, a writer waits at most that long (the file lock is then polled, at most
:data:`LAST_POLL` apart) and goes ahead without the lock: SQLite's own locking, which this
lock only orders and never replaces, then decides as before (a writer stuck forever never
blocks the others forever).
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path
from types import TracebackType

__all__ = ["FIRST_POLL", "LAST_POLL", "LOCK_SUFFIX", "WriterLock"]

LOCK_SUFFIX = "-writer.lock"
"""Appended to the database file name to name the lock file."""

FIRST_POLL = 0.000_05
LAST_POLL = 0.000_5
"""Seconds between two tries of a file locked by another process, with a timeout (doubling)."""

_LOCK_FILE_MODE = 0o600


class WriterLock:
    """Exclusive lock for write transactions on one SQLite database file.

    Parameters
    ----------
    database
        The database file; the lock file is ``<database>-writer.lock``, created if missing.
    timeout
        Seconds a writer waits for the lock before going ahead without it; ``None``: as long as
        it takes.
    """

    def __init__(self, database: Path, timeout: float | None = None) -> None:
        self.path = database.with_name(database.name + LOCK_SUFFIX)
        self._timeout = timeout
        self._held = threading.local()
        self._open()

    def _open(self) -> None:
        self._thread_lock = threading.Lock()
        self._fd = os.open(
            self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), _LOCK_FILE_MODE
        )
        self._pid = os.getpid()

    def __enter__(self) -> WriterLock:
        if self._pid != os.getpid():
            # A forked child: an inherited descriptor shares its flock with the parent's, and
            # the thread lock may be held by a parent thread the child does not have.
            self._open()
        self._held.locks = False
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        if not self._thread_lock.acquire(timeout=-1 if self._timeout is None else self._timeout):
            return self
        try:
            locked = _lock_file(self._fd, deadline)
        except BaseException:
            self._thread_lock.release()
            raise
        if not locked:
            self._thread_lock.release()
            return self
        self._held.locks = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not getattr(self._held, "locks", False):
            return
        self._held.locks = False
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()

    def close(self) -> None:
        """Close the lock file (the lock must not be held)."""
        if self._fd >= 0 and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = -1


def _lock_file(fd: int, deadline: float | None) -> bool:
    """Take the file lock; ``False`` if ``deadline`` (monotonic) passed first."""
    if deadline is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return True
    delay = FIRST_POLL
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, LAST_POLL)
        else:
            return True
