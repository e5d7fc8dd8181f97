"""CPU affinity of DIMSE threads and of the blob store's helper threads (drimbox.affinity)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator

import pytest

from drimbox import affinity
from drimbox.config import load_settings


@pytest.fixture(autouse=True)
def no_dimse_cpu_afterwards() -> Iterator[None]:
    yield
    affinity.set_dimse_cpu(None)


def in_thread(work: Callable[[], None]) -> set[int]:
    """Run ``work`` on a new thread; return that thread's CPUs afterwards."""
    seen: list[set[int]] = []

    def run() -> None:
        work()
        seen.append(os.sched_getaffinity(0))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return seen[0]


def test_dimse_processes_take_the_cpus_round_robin() -> None:
    cpus = sorted(os.sched_getaffinity(0))
    assert [affinity.dimse_cpu(number) for number in range(2 * len(cpus))] == cpus + cpus


def test_a_thread_is_pinned_to_the_dimse_cpu_and_unpinned_to_every_cpu() -> None:
    cpu = max(os.sched_getaffinity(0))
    affinity.set_dimse_cpu(cpu)

    assert in_thread(affinity.pin_to_dimse_cpu) == {cpu}

    def pin_then_unpin() -> None:
        affinity.pin_to_dimse_cpu()
        affinity.unpin()

    assert in_thread(pin_then_unpin) == set(affinity.PROCESS_CPUS)
    assert os.sched_getaffinity(0) == set(affinity.PROCESS_CPUS)  # the caller was left alone


def test_without_a_dimse_cpu_threads_keep_every_cpu() -> None:
    affinity.set_dimse_cpu(None)
    assert in_thread(affinity.pin_to_dimse_cpu) == set(affinity.PROCESS_CPUS)


def test_a_cpu_the_system_refuses_is_logged_and_the_thread_runs_unpinned(
    caplog: pytest.LogCaptureFixture,
) -> None:
    affinity.set_dimse_cpu(4095)  # no such CPU here
    with caplog.at_level(logging.WARNING, logger="drimbox.affinity"):
        assert in_thread(affinity.pin_to_dimse_cpu) == set(affinity.PROCESS_CPUS)
    assert "affinity.pin_failed cpu=4095" in caplog.text


_HELPERS = """
import json, os, threading, tempfile
from drimbox import affinity
from drimbox.storage._background import BACKGROUND_HASH_BYTES, fsync_in_background
from drimbox.storage._background import sha256_in_background
affinity.set_dimse_cpu(int(os.environ["CPU"]))
affinity.pin_to_dimse_cpu()  # the caller, as an association thread: hash threads start from it
with tempfile.TemporaryFile() as file:
    fsync_in_background(file.fileno()).result()
sha256_in_background([b"x" * BACKGROUND_HASH_BYTES]).result()
print(json.dumps({
    thread.name.rsplit("_", 1)[0]: sorted(os.sched_getaffinity(thread.native_id))
    for thread in threading.enumerate() if thread.name.startswith("drimbox-")
}))
"""


def test_sync_threads_run_on_the_dimse_cpu_and_hash_threads_on_every_cpu() -> None:
    cpu = max(os.sched_getaffinity(0))
    result = subprocess.run(
        [sys.executable, "-c", _HELPERS],
        env={**os.environ, "CPU": str(cpu)},
        capture_output=True,
        text=True,
        check=True,
    )

    threads = json.loads(result.stdout)
    assert threads == {"drimbox-sync": [cpu], "drimbox-hash": sorted(os.sched_getaffinity(0))}


def test_affinity_is_on_by_default_and_can_be_turned_off() -> None:
    assert load_settings(environ={}).dimse_cpu_affinity is True
    off = load_settings(environ={"DRIMBOX_DIMSE_CPU_AFFINITY": "false"})
    assert off.dimse_cpu_affinity is False
