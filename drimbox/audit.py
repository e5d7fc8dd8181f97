"""Append-only, hash-chained audit trail.

Each record is one JSON line holding the event, its outcome, its fields, the UTC time and the
SHA-256 of the previous line, so any edit or deletion inside the file breaks the chain
(:func:`verify_chain`). Records never hold pixel data, tokens or full identities: callers pass
identifiers (UIDs, AE titles, user ids), not names.

Durability (group commit): a record is appended with one ``write`` (``O_APPEND``, under an
exclusive ``flock`` shared by every process writing the trail) before :meth:`FileAuditLog.record`
returns, so a crash of the process (even ``kill -9``) loses nothing. The ``fdatasync`` that puts
it on disk is done by a background flusher at most :data:`FLUSH_INTERVAL_SECONDS` later (one
sync covers every record appended meanwhile), and by :meth:`FileAuditLog.close`. Only a power
loss or a kernel crash can lose records, those of the last :data:`FLUSH_INTERVAL_SECONDS` at most;
the chain of what remains stays intact (lines are appended whole, in order).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["FLUSH_INTERVAL_SECONDS", "FileAuditLog", "MemoryAuditLog", "verify_chain"]

_log = logging.getLogger("drimbox.audit")
_GENESIS = "0" * 64
_TAIL_BYTES = 64 * 1024  # longer than any record

FLUSH_INTERVAL_SECONDS = 0.05
"""Longest time an appended record waits for its ``fdatasync`` (the power-loss window)."""


class FileAuditLog:
    """Audit trail in a JSON-lines file, safe across threads and processes.

    Parameters
    ----------
    path
        The file; created if missing. Writers in several processes append under ``O_APPEND``
        with an exclusive ``flock``, so the chain stays linear.
    flush_interval
        Longest delay between a record's ``write`` and its ``fdatasync``.
    """

    def __init__(self, path: Path, *, flush_interval: float = FLUSH_INTERVAL_SECONDS) -> None:
        self._path = path
        self._flush_interval = flush_interval
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # the open file, append order and the cached hash
        self._sync_lock = threading.Lock()  # the file stays open while it is synced
        self._fd: int | None = None
        self._inode = -1  # of the file ``_fd`` is open on
        self._pid = os.getpid()  # the process that opened ``_fd``
        self._end = -1  # file size after our last append (-1: unknown)
        self._last = _GENESIS
        self._dirty = threading.Event()  # appended since the last fdatasync
        self._stopping = threading.Event()
        self._flusher: threading.Thread | None = None

    def record(self, event: str, outcome: str, **fields: str | int | None) -> None:
        """Append one event; a failure is logged, never raised to the caller."""
        try:
            with self._lock:
                self._append(self._open(), event, outcome, fields)
                if not self._dirty.is_set():  # set() takes the event's condition lock
                    self._dirty.set()
                self._start_flusher()
        except OSError as error:
            _log.error("audit.write_failed event=%s error=%s", event, error.strerror)

    def flush(self) -> None:
        """Put every record appended so far on disk (``fdatasync``)."""
        with self._sync_lock:
            with self._lock:
                fd = self._fd
                if not self._stopping.is_set():  # close() set it to wake the flusher: keep it
                    self._dirty.clear()
            if fd is not None:
                os.fdatasync(fd)  # appends go on meanwhile

    def close(self) -> None:
        """Sync what was appended, stop the flusher and close the file (idempotent).

        A later :meth:`record` reopens the file and restarts the flusher.
        """
        with self._lock:
            flusher, self._flusher = self._flusher, None
            self._stopping.set()
        if flusher is not None:
            self._dirty.set()  # wake it up
            flusher.join()
        with self._sync_lock, self._lock:
            self._stopping.clear()
            self._release()

    def records(self) -> Iterator[dict[str, object]]:
        """Yield every record, oldest first."""
        if not self._path.exists():
            return
        with self._path.open(encoding="utf-8") as stream:
            for line in stream:
                yield json.loads(line)

    def _open(self) -> int:
        if self._fd is not None and self._pid != os.getpid():
            # Forked: the inherited descriptor shares the parent's flock; use our own.
            os.close(self._fd)
            self._fd, self._flusher = None, None
        if self._fd is not None:
            try:
                current = os.stat(self._path).st_ino
            except FileNotFoundError:
                current = -1
            if current == self._inode:
                return self._fd
            self._release()  # rotated away: finish the old file, start the new one
        self._fd = os.open(self._path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        self._inode = os.fstat(self._fd).st_ino  # an open file keeps its inode
        self._pid = os.getpid()
        self._end = -1
        return self._fd

    def _release(self) -> None:
        fd, self._fd = self._fd, None
        self._end = -1
        if fd is not None:
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)

    def _append(
        self, fd: int, event: str, outcome: str, fields: dict[str, str | int | None]
    ) -> None:
        import fcntl  # POSIX only; imported here so the module loads everywhere

        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            size = os.fstat(fd).st_size
            previous = self._last if size == self._end else _last_hash(fd, size)
            body = {
                "time": datetime.now(UTC).isoformat(timespec="microseconds"),
                "event": event,
                "outcome": outcome,
                "fields": fields,
                "previous": previous,
            }
            line = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
            data = line + b"\n"
            written = os.write(fd, data)
            if written != len(data):
                self._end = -1
                raise OSError(0, "short write to the audit trail")
            self._end, self._last = size + written, hashlib.sha256(line).hexdigest()
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _start_flusher(self) -> None:
        if self._flusher is None or not self._flusher.is_alive():
            self._flusher = threading.Thread(
                target=self._flush_loop, name="drimbox-audit-flusher", daemon=True
            )
            self._flusher.start()

    def _flush_loop(self) -> None:
        while True:
            self._dirty.wait()
            if self._stopping.wait(self._flush_interval):
                return  # close() syncs
            try:
                self.flush()
            except OSError as error:
                _log.error("audit.sync_failed error=%s", error.strerror)


def _last_hash(fd: int, size: int) -> str:
    if size == 0:
        return _GENESIS
    start = max(0, size - _TAIL_BYTES)
    tail = os.pread(fd, size - start, start)
    last = tail.rstrip(b"\n").rsplit(b"\n", 1)[-1]
    return hashlib.sha256(last).hexdigest()


def verify_chain(path: Path) -> int | None:
    """Check a trail's hash chain.

    Returns
    -------
    int or None
        The 1-based number of the first record whose ``previous`` does not match, or ``None``
        when the whole chain is intact.
    """
    previous = _GENESIS
    with path.open("rb") as stream:
        for number, raw in enumerate(stream, start=1):
            line = raw.rstrip(b"\n")
            if json.loads(line).get("previous") != previous:
                return number
            previous = hashlib.sha256(line).hexdigest()
    return None


class MemoryAuditLog:
    """Audit trail kept in memory (tests, and boxes run without a data directory)."""

    def __init__(self) -> None:
        self.events: list[dict[str, object]] = []
        self._lock = threading.Lock()

    def record(self, event: str, outcome: str, **fields: str | int | None) -> None:
        """Append one event."""
        with self._lock:
            self.events.append({"event": event, "outcome": outcome, **fields})
