"""The registry's audit trail: who did what, when, with which outcome (append-only JSON lines).

Each line holds the SHA-256 of the previous one, so an edit or a deletion breaks the chain.
Patient identities are recorded as a SHA-256 prefix, never in clear.

Cost model: the file stays open; each record is one ``write`` under an exclusive ``flock``
(several worker processes share one chain), and the previous line's hash is kept in memory
while no other process has appended (checked by the file size). Every record reaches the
kernel before the request is answered, so a crash of the registry process loses nothing.
Records of *writes* (``durable=True``) are also on disk before the answer: their callers wait
for an ``fdatasync`` shared by every record appended meanwhile (group commit), so concurrent
publishes pay one sync between them. Read records are not synced one by one: the next durable
record's sync covers them, otherwise the kernel's writeback (``vm.dirty_expire_centisecs``, 30 s
by default); only a power loss in that window can lose them. A renamed (rotated) file is noticed
and a new one started, its first line chained to genesis.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from datetime import UTC, datetime
from pathlib import Path

import orjson

__all__ = ["RegistryAudit", "patient_digest"]

_log = logging.getLogger("registry.audit")
_GENESIS = "0" * 64
_DIGEST_CHARS = 16
_TAIL_BYTES = 64 * 1024  # longer than any record
_LINE_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE


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
        self._lock = threading.Lock()  # the chain: append order and the cached hash
        self._sync_lock = threading.Lock()  # one fdatasync at a time
        self._fd: int | None = None
        self._end = -1  # file size after our last append (-1: unknown)
        self._last = _GENESIS
        self._appended = 0  # bytes appended by this writer (monotonic)
        self._synced = 0  # of which known to be on disk
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def record(
        self,
        event: str,
        outcome: str,
        *,
        who: str,
        durable: bool = False,
        **fields: str | int | None,
    ) -> None:
        """Append one record; a failed write is logged, never raised to the request.

        Parameters
        ----------
        event, outcome, who
            What happened, how it ended, and who asked (``requester@address``).
        durable
            Wait until the record is on disk (used for writes, before answering them).
        fields
            Details (entry id, KOS UID, patient digest, counts...).
        """
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
                fd = self._open()
                position = self._append(fd, body)
            if durable:
                self._sync_to(fd, position)
        except OSError as error:
            _log.error("registry.audit.write_failed error=%s", error.strerror)

    def close(self) -> None:
        """Sync what was appended and close the file (a later record reopens it)."""
        with self._sync_lock, self._lock:
            self._release()

    def _open(self) -> int:
        assert self._path is not None
        if self._fd is not None:
            try:
                current = os.stat(self._path).st_ino
            except FileNotFoundError:
                current = -1
            if current == os.fstat(self._fd).st_ino:
                return self._fd
            self._release()  # rotated away: finish the old file, start the new one
        self._fd = os.open(self._path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        self._end, self._appended, self._synced = -1, 0, 0
        return self._fd

    def _release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)

    def _append(self, fd: int, body: dict[str, object]) -> int:
        import fcntl  # POSIX only; imported here so the module loads everywhere

        fcntl.flock(fd, fcntl.LOCK_EX)  # several worker processes share one chain
        try:
            size = os.fstat(fd).st_size
            previous = self._last if size == self._end else _last_hash(fd, size)
            # orjson: compact, keys sorted, ≈ 10× cheaper than json.dumps; the chain hashes the
            # line's bytes whatever their layout
            data = orjson.dumps({**body, "previous": previous}, option=_LINE_OPTIONS)
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(0, "short write to the audit trail")
            self._end, self._last = size + written, hashlib.sha256(data[:-1]).hexdigest()
            self._appended += written
            return self._appended
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _sync_to(self, fd: int, position: int) -> None:
        with self._sync_lock:
            with self._lock:
                if self._fd != fd:
                    return  # closed or rotated since: the release synced it
                if self._synced >= position:
                    return  # another caller's fdatasync covered this record
                target = self._appended
            os.fdatasync(fd)
            self._synced = max(self._synced, target)


def _last_hash(fd: int, size: int) -> str:
    if size == 0:
        return _GENESIS
    tail = os.pread(fd, min(size, _TAIL_BYTES), max(0, size - _TAIL_BYTES))
    last = tail.rstrip(b"\n").rsplit(b"\n", 1)[-1]
    return hashlib.sha256(last).hexdigest()
