"""FileAuditLog.close never waits forever for a flusher caught in the middle of a flush."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from drimbox.audit import FileAuditLog, verify_chain


def test_close_while_the_flusher_is_flushing_stops_it(tmp_path: Path) -> None:
    trail = FileAuditLog(tmp_path / "audit.jsonl", flush_interval=0.01)
    trail.record("stored", "success")
    trail._sync_lock.acquire()  # holds the flusher inside flush(), before it clears its flag
    try:
        time.sleep(0.2)  # the flusher's interval is over: it waits for the lock
        closing = threading.Thread(target=trail.close, daemon=True)
        closing.start()
        time.sleep(0.2)  # close() has asked the flusher to stop and waits for it
    finally:
        trail._sync_lock.release()
    closing.join(timeout=5)

    assert not closing.is_alive(), "close() waits forever for the flusher"
    assert not [t for t in threading.enumerate() if t.name == "drimbox-audit-flusher"]
    assert verify_chain(tmp_path / "audit.jsonl") is None
