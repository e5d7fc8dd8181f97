"""CPU affinity of the threads that receive DIMSE associations and sync what they store.

A DIMSE process stores an instance on its association thread and syncs its blob on a helper
thread (:mod:`drimbox.storage._background`): the two hand the interpreter lock to each other
twice per instance. When they run on different CPUs, each handoff wakes a thread on the other
CPU and the storing thread waits for it; on one CPU, the helper runs when the storing thread
blocks (socket, ``fdatasync``) and the handoff costs nothing more. Measured on the 2-core
benchmark machine, two associations on two DIMSE processes: 14 % more instances per second
(median of six paired runs) when each process's association and sync threads share one CPU.

So, unless ``dimse_cpu_affinity`` is off, each DIMSE process is given one CPU of those the box
may use (:func:`dimse_cpu`: process *i* gets the *i*-th, round-robin), and
:func:`pin_to_dimse_cpu` pins the calling thread to it: each association thread, and the sync
helper threads when they start. The process's other threads (HTTP, HL7, workers, the hashing
helpers of large objects) keep every CPU (:func:`unpin`).
"""

from __future__ import annotations

import logging
import os

__all__ = ["PROCESS_CPUS", "dimse_cpu", "pin_to_dimse_cpu", "set_dimse_cpu", "unpin"]

_log = logging.getLogger("drimbox.affinity")

PROCESS_CPUS: frozenset[int] = frozenset(
    os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else ()
)
"""The CPUs the process may use, as it started (empty where affinity is not supported)."""

_dimse_cpu: int | None = None


def dimse_cpu(process_number: int) -> int | None:
    """Return the CPU of DIMSE process ``process_number`` (0: the main process).

    ``None`` where the operating system has no CPU affinity.
    """
    if not PROCESS_CPUS:
        return None
    cpus = sorted(PROCESS_CPUS)
    return cpus[process_number % len(cpus)]


def set_dimse_cpu(cpu: int | None) -> None:
    """Set (or clear, with ``None``) the CPU this process's DIMSE threads are pinned to."""
    global _dimse_cpu  # one setting per process, made by the composition root
    _dimse_cpu = cpu


def pin_to_dimse_cpu() -> None:
    """Pin the calling thread to this process's DIMSE CPU, if one is set.

    A refusal by the operating system (a CPU taken away since the start) is logged and the
    thread runs unpinned.
    """
    cpu = _dimse_cpu
    if cpu is None:
        return
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError as error:
        _log.warning("affinity.pin_failed cpu=%d error=%s", cpu, error.strerror)


def unpin() -> None:
    """Let the calling thread run on every CPU the process started with."""
    if PROCESS_CPUS:
        try:
            os.sched_setaffinity(0, PROCESS_CPUS)
        except OSError as error:
            _log.warning("affinity.unpin_failed error=%s", error.strerror)
