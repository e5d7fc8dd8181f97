"""An in-memory blob store for tests and throw-away boxes: same semantics, no durability."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable, Iterator

from drimbox.errors import BlobNotFoundError
from drimbox.model import StoredBlob
from drimbox.storage._written import DurableWrite
from drimbox.storage.keys import new_key, validate_key

__all__ = ["MemoryBlobStore"]


class MemoryBlobStore:
    """A thread-safe :class:`drimbox.ports.BlobStore` holding objects in a dictionary.

    It follows the contract of the durable stores (opaque keys, key validation, nothing visible
    after a failed put, :class:`BlobNotFoundError` for missing keys) and simulates nothing else.
    """

    def __init__(self) -> None:
        self._objects: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MemoryBlobStore({len(self._objects)} objects)"

    def _get(self, key: str) -> bytes:
        validate_key(key)
        with self._lock:
            try:
                return self._objects[key]
            except KeyError:
                raise BlobNotFoundError("no such blob") from None

    def write(self, chunks: Iterable[bytes]) -> DurableWrite:
        """Store a new object durably (see :meth:`put`): its handle is durable already."""
        return DurableWrite(self.put(chunks), self.delete)

    def put(self, chunks: Iterable[bytes]) -> StoredBlob:
        """Store a new object; if ``chunks`` raises, nothing is stored and the error propagates."""
        digest = hashlib.sha256()
        parts: list[bytes] = []
        for chunk in chunks:
            digest.update(chunk)
            parts.append(bytes(chunk))
        content = b"".join(parts)
        with self._lock:
            key = new_key()
            while key in self._objects:  # pragma: no cover - 128 random bits do not collide
                key = new_key()
            self._objects[key] = content
        return StoredBlob(key=key, size=len(content), sha256=digest.hexdigest())

    def stream(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Yield the object's bytes in chunks of at most ``chunk_size`` (missing key raises now)."""
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, not {chunk_size}")
        content = self._get(key)
        return (content[start : start + chunk_size] for start in range(0, len(content), chunk_size))

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        """Return ``length`` bytes from ``offset`` (fewer at the end of the object)."""
        if offset < 0 or length < 0:
            raise ValueError(f"invalid range: offset {offset}, length {length}")
        return self._get(key)[offset : offset + length]

    def size(self, key: str) -> int:
        """Return the object's size in bytes."""
        return len(self._get(key))

    def delete(self, key: str) -> None:
        """Remove the object; a well-formed key that is not held is not an error."""
        validate_key(key)
        with self._lock:
            self._objects.pop(key, None)

    def keys(self) -> Iterator[str]:
        """Yield every stored key (a snapshot taken now)."""
        with self._lock:
            snapshot = sorted(self._objects)
        return iter(snapshot)

    def cleanup_temporary(self, stale_after_seconds: float = 3600.0) -> int:
        """Nothing to remove: a failed put leaves nothing behind in memory."""
        return 0

    def close(self) -> None:
        """Nothing to release; the objects stay readable (tests inspect them after a box stops)."""
