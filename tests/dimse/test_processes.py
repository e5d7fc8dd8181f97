"""Several DIMSE receiver processes: the default count, their CPUs, none outlives the box."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from drimbox.affinity import dimse_cpu
from drimbox.config import load_settings, resolved_dimse_processes
from tests.fixtures.box import ServedBox

_EXIT_SECONDS = 10.0


def _receivers(pid: int) -> list[int]:
    """The DIMSE receiver processes of the box ``pid`` (multiprocessing spawn children)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [
        int(child)
        for child in children
        if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()
    ]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.integration
def test_serve_runs_one_dimse_process_per_core_by_default(
    served_box_factory: Callable[..., ServedBox],
) -> None:
    expected = resolved_dimse_processes(load_settings(environ={}))
    box = served_box_factory(dimse_processes=0)
    box.start()
    assert box.process is not None
    assert len(_receivers(box.process.pid)) == expected - 1
    plural = "es" if expected > 1 else ""
    assert f"({expected} process{plural})" in box.log_text()


@pytest.mark.integration
def test_receiver_processes_stop_when_the_main_process_is_killed(
    served_box_factory: Callable[..., ServedBox],
) -> None:
    box = served_box_factory(dimse_processes=2)
    box.start()
    assert box.process is not None
    receivers = _receivers(box.process.pid)
    assert len(receivers) == 1
    box.kill()  # kill -9 of the main process alone
    deadline = time.monotonic() + _EXIT_SECONDS
    while any(_alive(pid) for pid in receivers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in receivers), "a receiver outlived the box"


def test_an_explicit_process_count_is_kept_and_zero_means_one_per_core() -> None:
    assert (
        resolved_dimse_processes(load_settings(overrides={"dimse_processes": 3}, environ={})) == 3
    )
    automatic = resolved_dimse_processes(load_settings(environ={}))
    assert 1 <= automatic <= min(4, len(os.sched_getaffinity(0)))


def _pinned_threads(pids: list[int]) -> dict[int, set[int]]:
    """{process id: CPUs} of the threads of ``pids`` allowed on fewer CPUs than the box."""
    every = os.sched_getaffinity(0)
    pinned: dict[int, set[int]] = {}
    for pid in pids:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                cpus = os.sched_getaffinity(int(task))
            except ProcessLookupError:  # the thread ended meanwhile
                continue
            if cpus != every:
                pinned.setdefault(pid, set()).update(cpus)
    return pinned


def _associations_open(box: ServedBox, count: int) -> list[Association]:
    """``count`` established associations (C-ECHO done), spread over the box's processes."""
    opened = []
    for _ in range(count):
        ae = AE(ae_title="PINNED")
        ae.add_requested_context(Verification)
        association = ae.associate("127.0.0.1", box.dimse_port, ae_title=box.aet)
        assert association.is_established
        assert association.send_c_echo().Status == 0
        opened.append(association)
    return opened


@pytest.mark.integration
def test_each_dimse_process_serves_its_associations_on_its_own_cpu(
    served_box_factory: Callable[..., ServedBox],
) -> None:
    box = served_box_factory(dimse_processes=2)
    box.start()
    assert box.process is not None
    main, receiver = box.process.pid, _receivers(box.process.pid)[0]
    associations = _associations_open(box, 8)  # the idle process takes the next one
    try:
        pinned = _pinned_threads([main, receiver])
    finally:
        for association in associations:
            association.release()

    if len(os.sched_getaffinity(0)) == 1:  # one CPU: pinned to it is not pinned at all
        assert pinned == {}
    else:
        assert dimse_cpu(0) != dimse_cpu(1)
        assert pinned == {main: {dimse_cpu(0)}, receiver: {dimse_cpu(1)}}


@pytest.mark.integration
def test_without_cpu_affinity_no_dimse_thread_is_pinned(
    served_box_factory: Callable[..., ServedBox],
) -> None:
    box = served_box_factory(dimse_processes=2, extra_args=["--no-dimse-cpu-affinity"])
    box.start()
    assert box.process is not None
    associations = _associations_open(box, 4)
    try:
        assert _pinned_threads([box.process.pid, *_receivers(box.process.pid)]) == {}
    finally:
        for association in associations:
            association.release()
