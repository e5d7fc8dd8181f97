"""FileAuditLog: appended at once, synced in groups, chained across writers, crash-safe."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from drimbox.audit import FileAuditLog, verify_chain

_WAIT_SECONDS = 5.0


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_record_is_in_the_file_when_record_returns(tmp_path: Path) -> None:
    trail = FileAuditLog(tmp_path / "audit.jsonl")
    try:
        trail.record("dicom.instance.stored", "success", sop_instance_uid="1.2.3", size=10)
        records = _lines(tmp_path / "audit.jsonl")  # another reader, before any close
    finally:
        trail.close()
    assert [(r["event"], r["fields"]) for r in records] == [
        ("dicom.instance.stored", {"sop_instance_uid": "1.2.3", "size": 10})
    ]


def test_a_burst_of_records_shares_few_syncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced = threading.Event()
    calls: list[int] = []
    real_fdatasync = os.fdatasync

    def counting_fdatasync(fd: int) -> None:
        calls.append(fd)
        real_fdatasync(fd)
        synced.set()

    monkeypatch.setattr(os, "fdatasync", counting_fdatasync)
    trail = FileAuditLog(tmp_path / "audit.jsonl", flush_interval=0.2)
    try:
        for number in range(200):
            trail.record("event", "success", number=number)
        assert synced.wait(_WAIT_SECONDS), "the flusher never synced the appended records"
        assert 1 <= len(calls) < 20
    finally:
        trail.close()
    assert len(_lines(tmp_path / "audit.jsonl")) == 200
    assert verify_chain(tmp_path / "audit.jsonl") is None


def test_close_syncs_stops_the_flusher_and_a_later_record_reopens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real_fdatasync = os.fdatasync

    def counting_fdatasync(fd: int) -> None:
        calls.append(fd)
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", counting_fdatasync)
    trail = FileAuditLog(tmp_path / "audit.jsonl", flush_interval=60.0)
    trail.record("first", "success")
    assert calls == []  # not yet: the flusher waits for its interval
    trail.close()
    assert len(calls) == 1
    assert not [t for t in threading.enumerate() if t.name == "drimbox-audit-flusher"]
    trail.record("second", "success")
    trail.close()
    assert [r["event"] for r in _lines(tmp_path / "audit.jsonl")] == ["first", "second"]
    assert verify_chain(tmp_path / "audit.jsonl") is None


def test_two_writers_on_one_file_keep_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    writers = [FileAuditLog(path), FileAuditLog(path)]  # as two processes would

    def write(trail: FileAuditLog, name: str) -> None:
        for number in range(100):
            trail.record(name, "success", number=number)

    threads = [
        threading.Thread(target=write, args=(trail, f"writer{i}"))
        for i, trail in enumerate(writers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for trail in writers:
        trail.close()
    assert len(_lines(path)) == 200
    assert verify_chain(path) is None


def test_a_rotated_trail_restarts_its_chain_in_a_new_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    trail = FileAuditLog(path)
    trail.record("before", "success")
    path.rename(tmp_path / "audit.1.jsonl")
    trail.record("after", "success")
    trail.close()
    assert [r["event"] for r in _lines(path)] == ["after"]
    assert verify_chain(path) is None
    assert verify_chain(tmp_path / "audit.1.jsonl") is None


def test_an_edited_record_breaks_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    trail = FileAuditLog(path)
    for number in range(3):
        trail.record("event", "success", number=number)
    trail.close()
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[1] = lines[1].replace('"number":1', '"number":7')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert verify_chain(path) == 3


_KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from drimbox.audit import FileAuditLog
trail = FileAuditLog(Path(sys.argv[1]), flush_interval=3600.0)
for number in range(50):
    trail.record("event", "success", number=number)
print("written", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_process_loses_no_record_it_returned_from(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    started = time.monotonic()
    process = subprocess.run(
        [sys.executable, "-c", _KILLED_WRITER, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert process.returncode == -signal.SIGKILL, process.stderr
    assert process.stdout.strip() == "written"
    assert time.monotonic() - started < 60
    assert [r["fields"] for r in _lines(path)] == [{"number": n} for n in range(50)]
    assert verify_chain(path) is None
