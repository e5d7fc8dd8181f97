"""SHA-256 of blob content, computed while the content is written and synced.

Hashing 512 KiB (a CT slice) takes a few hundred microseconds; ``hashlib`` releases the GIL
while it hashes, as ``os.writev`` and ``os.fsync`` do while they wait, so a large object's digest
computed on another thread costs no time on the storing thread.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

__all__ = ["BACKGROUND_HASH_BYTES", "Digest", "sha256_in_background", "sha256_of"]

BACKGROUND_HASH_BYTES = 128 * 1024
"""Content from this size on is hashed on the hashing threads; smaller content right away."""

_HASHING_THREADS = 2


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


_HASHING_LOCK = threading.Lock()
_HASHING_STATE: tuple[int, ThreadPoolExecutor] | None = None  # (the process that started it, it)


def sha256_in_background(buffers: Sequence[bytes]) -> Digest:
    """Hash large content on the shared hashing threads; small content right away.

    The threads belong to the process that started them: a forked child starts its own.

    Raises
    ------
    TypeError
        A buffer is not a bytes-like object.
    """
    global _HASHING_STATE  # one pool per process
    if sum(memoryview(buffer).nbytes for buffer in buffers) < BACKGROUND_HASH_BYTES:
        return Digest(sha256_of(buffers), None)
    with _HASHING_LOCK:
        if _HASHING_STATE is None or _HASHING_STATE[0] != os.getpid():
            executor = ThreadPoolExecutor(
                max_workers=_HASHING_THREADS, thread_name_prefix="drimbox-sha256"
            )
            _HASHING_STATE = (os.getpid(), executor)
        executor = _HASHING_STATE[1]
    return Digest(None, executor.submit(sha256_of, buffers))
