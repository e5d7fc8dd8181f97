"""Work a put does on helper threads while the storing thread writes and syncs.

- The SHA-256 of large content: hashing 512 KiB (a CT slice) takes a few hundred
  microseconds; ``hashlib`` releases the GIL while it hashes, as ``os.writev`` and ``os.fsync``
  do while they wait, so the digest computed on another thread costs no time.
- The ``fsync`` of the object, while the storing thread indexes it (the object's directory
  entry is already durable: :mod:`drimbox.storage._spares`).

Hashing and syncing have a pool of threads each: the sync threads run on the CPU of the
process's DIMSE threads, the hashing threads on any (:mod:`drimbox.affinity`). The threads
belong to the process that started them: a forked child starts its own.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from drimbox.affinity import pin_to_dimse_cpu, unpin

__all__ = [
    "BACKGROUND_HASH_BYTES",
    "Digest",
    "fsync_in_background",
    "sha256_in_background",
    "sha256_of",
]

BACKGROUND_HASH_BYTES = 128 * 1024
"""Content from this size on is hashed on the hashing threads; smaller content right away."""

_THREADS = 8  # per process and pool: a hash or a file sync per put in progress


def sha256_of(buffers: Sequence[bytes]) -> str:
    """Return the SHA-256 (hex) of the buffers' concatenation."""
    digest = hashlib.sha256()
    for buffer in buffers:
        digest.update(buffer)
    return digest.hexdigest()


class Digest:
    """A SHA-256 computed now (small content) or by the hashing thread (large content)."""

    def __init__(self, value: str | None, pending: Future[str] | None) -> None:
        self._value = value
        self._pending = pending

    def result(self) -> str:
        """Return the digest (hex), waiting for the hashing thread if need be."""
        if self._pending is not None:
            return self._pending.result()
        assert self._value is not None
        return self._value


_POOLS_LOCK = threading.Lock()
_POOLS: dict[str, tuple[int, ThreadPoolExecutor]] = {}  # name: (the process that started it, it)


def _pool(name: str, initializer: Callable[[], None]) -> ThreadPoolExecutor:
    """Helper threads of this process (started on first use, again after a fork)."""
    with _POOLS_LOCK:
        started = _POOLS.get(name)
        if started is None or started[0] != os.getpid():
            executor = ThreadPoolExecutor(
                max_workers=_THREADS, thread_name_prefix=f"drimbox-{name}", initializer=initializer
            )
            started = _POOLS[name] = (os.getpid(), executor)
        return started[1]


def sha256_in_background(buffers: Sequence[bytes]) -> Digest:
    """Hash large content on a helper thread; small content right away.

    Raises
    ------
    TypeError
        A buffer is not a bytes-like object.
    """
    if sum(memoryview(buffer).nbytes for buffer in buffers) < BACKGROUND_HASH_BYTES:
        return Digest(sha256_of(buffers), None)
    return Digest(None, _pool("hash", unpin).submit(sha256_of, buffers))


def fsync_in_background(fd: int) -> Future[None]:
    """Start ``os.fsync(fd)`` on a helper thread; the caller keeps ``fd`` open until it ends.

    The sync threads run on the DIMSE CPU when one is set (:mod:`drimbox.affinity`).
    """
    return _pool("sync", pin_to_dimse_cpu).submit(os.fsync, fd)
