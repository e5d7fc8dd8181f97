"""Append-only, hash-chained audit trail.

Each record is one JSON line holding the event, its outcome, its fields, the UTC time and the
SHA-256 of the previous line, so any edit or deletion inside the file breaks the chain
(:func:`verify_chain`). Records never hold pixel data, tokens or full identities: callers pass
identifiers (UIDs, AE titles, user ids), not names.
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

__all__ = ["FileAuditLog", "MemoryAuditLog", "verify_chain"]

_log = logging.getLogger("drimbox.audit")
_GENESIS = "0" * 64


class FileAuditLog:
    """Audit trail in a JSON-lines file, safe across threads and processes.

    Parameters
    ----------
    path
        The file; created if missing. Writers in several processes append under ``O_APPEND``
        with an exclusive ``flock``, so the chain stays linear.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def record(self, event: str, outcome: str, **fields: str | int | None) -> None:
        """Append one event; a failure is logged, never raised to the caller."""
        try:
            with self._lock:
                self._append(event, outcome, fields)
        except OSError as error:
            _log.error("audit.write_failed event=%s error=%s", event, error.strerror)

    def _append(self, event: str, outcome: str, fields: dict[str, str | int | None]) -> None:
        import fcntl  # POSIX only; imported here so the module loads everywhere

        fd = os.open(self._path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            previous = _last_hash(fd)
            body = {
                "time": datetime.now(UTC).isoformat(timespec="microseconds"),
                "event": event,
                "outcome": outcome,
                "fields": fields,
                "previous": previous,
            }
            line = json.dumps(body, sort_keys=True, separators=(",", ":")) + "\n"
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def records(self) -> Iterator[dict[str, object]]:
        """Yield every record, oldest first."""
        if not self._path.exists():
            return
        with self._path.open(encoding="utf-8") as stream:
            for line in stream:
                yield json.loads(line)


def _last_hash(fd: int) -> str:
    size = os.fstat(fd).st_size
    if size == 0:
        return _GENESIS
    start = max(0, size - 65536)
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
