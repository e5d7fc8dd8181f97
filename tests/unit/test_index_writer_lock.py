"""WriterLock: one SQLite writer at a time across threads and processes."""

from __future__ import annotations

import multiprocessing
import threading
import time
from pathlib import Path

from drimbox.index._writelock import LOCK_SUFFIX, WriterLock

_HOLD_SECONDS = 0.002
_ROUNDS = 20


def _hold_and_log(database: Path, log: Path, name: str) -> None:
    lock = WriterLock(database)
    try:
        for _ in range(_ROUNDS):
            with lock, log.open("a") as journal:
                journal.write(f"{name} in\n")
                journal.flush()
                time.sleep(_HOLD_SECONDS)
                journal.write(f"{name} out\n")
    finally:
        lock.close()


def _assert_never_overlapping(lines: list[str]) -> None:
    holder = None
    for line in lines:
        name, event = line.split()
        if event == "in":
            assert holder is None, f"{name} entered while {holder} held the lock"
            holder = name
        else:
            assert holder == name
            holder = None


def test_threads_of_a_process_write_one_at_a_time(tmp_path: Path) -> None:
    database, log = tmp_path / "index.sqlite3", tmp_path / "log"
    threads = [
        threading.Thread(target=_hold_and_log, args=(database, log, f"t{n}")) for n in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = log.read_text().splitlines()
    assert len(lines) == 4 * _ROUNDS * 2
    _assert_never_overlapping(lines)


def test_processes_write_one_at_a_time(tmp_path: Path) -> None:
    database, log = tmp_path / "index.sqlite3", tmp_path / "log"
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_hold_and_log, args=(database, log, f"p{n}")) for n in range(2)
    ]
    for process in processes:
        process.start()
    _hold_and_log(database, log, "main")
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    lines = log.read_text().splitlines()
    assert len(lines) == 3 * _ROUNDS * 2
    _assert_never_overlapping(lines)
    assert (tmp_path / f"index.sqlite3{LOCK_SUFFIX}").exists()


def test_one_lock_object_shared_by_threads_still_excludes_them(tmp_path: Path) -> None:
    lock = WriterLock(tmp_path / "index.sqlite3")
    inside = 0
    most = 0
    guard = threading.Lock()

    def work() -> None:
        nonlocal inside, most
        for _ in range(_ROUNDS):
            with lock:
                with guard:
                    inside += 1
                    most = max(most, inside)
                time.sleep(_HOLD_SECONDS / 4)
                with guard:
                    inside -= 1

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lock.close()
    assert most == 1
