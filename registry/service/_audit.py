"""The registry's audit trail: who did what, when, with which outcome (append-only JSON lines).

Each line holds the SHA-256 of the previous one, so an edit or a deletion breaks the chain.
Patient identities are recorded as a SHA-256 prefix, never in clear.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["RegistryAudit", "patient_digest"]

_log = logging.getLogger("registry.audit")
_GENESIS = "0" * 64
_DIGEST_CHARS = 16
_TAIL_BYTES = 64 * 1024  # longer than any record


def patient_digest(oid: str, value: str) -> str:
    """Return a pseudonymous reference to a patient for the audit trail (never the INS)."""
    return hashlib.sha256(f"{oid}|{value}".encode()).hexdigest()[:_DIGEST_CHARS]


class RegistryAudit:
    """Audit trail of every read and write of the registry.

    Parameters
    ----------
    path
        The JSON-lines file; ``None`` sends the records to the ``registry.audit`` logger only.
    """

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._lock = threading.Lock()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def record(self, event: str, outcome: str, *, who: str, **fields: str | int | None) -> None:
        """Append one record; a failed write is logged, never raised to the request."""
        body: dict[str, object] = {
            "time": datetime.now(UTC).isoformat(timespec="microseconds"),
            "event": event,
            "outcome": outcome,
            "who": who,
            "fields": fields,
        }
        _log.info("registry.audit event=%s outcome=%s who=%s", event, outcome, who)
        if self._path is None:
            return
        try:
            with self._lock:
                self._append(body)
        except OSError as error:
            _log.error("registry.audit.write_failed error=%s", error.strerror)

    def _append(self, body: dict[str, object]) -> None:
        import fcntl  # POSIX only; imported here so the module loads everywhere

        assert self._path is not None
        fd = os.open(self._path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # several worker processes share one chain
            line = json.dumps({**body, "previous": _last_hash(fd)}, sort_keys=True)
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)  # releases the lock


def _last_hash(fd: int) -> str:
    size = os.fstat(fd).st_size
    if size == 0:
        return _GENESIS
    tail = os.pread(fd, min(size, _TAIL_BYTES), max(0, size - _TAIL_BYTES))
    last = tail.rstrip(b"\n").rsplit(b"\n", 1)[-1]
    return hashlib.sha256(last).hexdigest()
