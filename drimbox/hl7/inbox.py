"""Durable HL7 inbox: every accepted message is on disk before the sender gets AA.

Layout under the inbox directory::

    tmp/        partial writes (removed at start-up: they were never acknowledged)
    pending/    accepted, not yet processed
    done/       processed (kept for audit; purge with :meth:`HL7Inbox.purge_done`)

File names are opaque (creation time in nanoseconds + random hex), never derived from the
message. A message is written to ``tmp/``, fsynced, renamed into ``pending/`` and the directory
fsynced: after :meth:`HL7Inbox.store` returns, the message survives a crash or ``kill -9``.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path

from drimbox.fsync import fsync_directory
from drimbox.hl7.errors import HL7Error
from drimbox.hl7.messages import ReportMessage, acknowledge, parse_report_message

__all__ = [
    "HL7Inbox",
    "make_report_handler",
]

_ID = re.compile(r"[0-9]{20}-[0-9a-f]{16}")
_SUFFIX = ".hl7"
_log = logging.getLogger(__name__)


class HL7Inbox:
    """A directory of received messages, durable before acknowledgment.

    Parameters
    ----------
    directory
        Created if needed. Partial writes left by a crash are removed.
    """

    def __init__(self, directory: Path) -> None:
        self._root = Path(directory)
        self._tmp = self._root / "tmp"
        self._pending = self._root / "pending"
        self._done = self._root / "done"
        for sub in (self._tmp, self._pending, self._done):
            sub.mkdir(parents=True, exist_ok=True)
        for partial in self._tmp.iterdir():
            partial.unlink()
        self._lock = threading.Lock()
        self._last_ns = 0

    def _new_id(self) -> str:
        with self._lock:  # strictly increasing, so pending() is in arrival order
            now = max(time.time_ns(), self._last_ns + 1)
            self._last_ns = now
        return f"{now:020d}-{secrets.token_hex(8)}"

    def _path(self, directory: Path, message_id: str) -> Path:
        if not _ID.fullmatch(message_id):
            raise ValueError("not an inbox message id")
        return directory / (message_id + _SUFFIX)

    def store(self, raw: bytes) -> str:
        """Write ``raw`` durably and return its id.

        Raises
        ------
        OSError
            When the disk refuses (nothing is left in ``pending/``).
        """
        message_id = self._new_id()
        temporary = self._path(self._tmp, message_id)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except OSError:
            os.close(fd)
            temporary.unlink(missing_ok=True)
            raise
        os.close(fd)
        os.replace(temporary, self._path(self._pending, message_id))
        fsync_directory(self._pending)  # the new entry is durable; tmp/ needs no sync
        return message_id

    def pending(self) -> list[str]:
        """Return the ids of messages not yet processed, oldest first."""
        ids = (p.name.removesuffix(_SUFFIX) for p in self._pending.iterdir())
        return sorted(i for i in ids if _ID.fullmatch(i))

    def read(self, message_id: str) -> bytes:
        """Return a pending or processed message's bytes.

        Raises
        ------
        FileNotFoundError
            Unknown id.
        """
        path = self._path(self._pending, message_id)
        if not path.exists():
            path = self._path(self._done, message_id)
        return path.read_bytes()

    def mark_done(self, message_id: str) -> None:
        """Move a processed message out of ``pending/`` (idempotent)."""
        source = self._path(self._pending, message_id)
        if not source.exists():
            if self._path(self._done, message_id).exists():
                return
            raise FileNotFoundError(f"no pending inbox message {message_id}")
        os.replace(source, self._path(self._done, message_id))
        fsync_directory(self._done)
        fsync_directory(self._pending)

    def purge_done(self, older_than_seconds: float) -> int:
        """Delete processed messages older than ``older_than_seconds``; return how many."""
        limit = time.time_ns() - int(older_than_seconds * 1e9)
        removed = 0
        for path in self._done.iterdir():
            stamp = path.name.split("-", 1)[0]
            if stamp.isdigit() and int(stamp) < limit:
                path.unlink()
                removed += 1
        return removed


def make_report_handler(
    inbox: HL7Inbox,
    on_stored: Callable[[str, ReportMessage], None] | None = None,
) -> Callable[[bytes], bytes]:
    """Return an MLLP handler: parse, refuse (AE/AR, nothing stored) or store then ACK AA.

    Parameters
    ----------
    inbox
        Where accepted messages are persisted before AA.
    on_stored
        Called after persistence with the inbox id and the parsed message (e.g. to wake a
        worker); its failure does not change the AA, the message being safe in the inbox.
    """

    def handle(raw: bytes) -> bytes:
        try:
            message = parse_report_message(raw)
        except HL7Error as error:
            _log.info("hl7.refused", extra={"code": int(error.code), "reason": str(error)})
            return acknowledge(raw, error)
        try:
            message_id = inbox.store(raw)
        except OSError as exc:
            _log.error("hl7.inbox.store_failed", extra={"error": type(exc).__name__})
            return acknowledge(
                raw,
                HL7Error("the message could not be stored; send it again later"),
            )
        _log.info("hl7.accepted", extra={"inbox_id": message_id, "action": message.action.value})
        if on_stored is not None:
            try:
                on_stored(message_id, message)
            except Exception:
                _log.exception("hl7.inbox.on_stored_failed", extra={"inbox_id": message_id})
        return acknowledge(raw)

    return handle
