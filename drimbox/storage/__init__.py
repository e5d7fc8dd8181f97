"""BlobStore adapters: the filesystem (default), S3 (``minio`` SDK) and memory (tests).

``S3BlobStore`` is imported lazily, on first access, so that a box on the filesystem starts
without importing ``minio`` at all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from drimbox.storage.filesystem import FilesystemBlobStore
from drimbox.storage.memory import MemoryBlobStore

if TYPE_CHECKING:
    from drimbox.storage.s3 import S3BlobStore

__all__ = ["FilesystemBlobStore", "MemoryBlobStore", "S3BlobStore"]


def __getattr__(name: str) -> Any:
    """Import ``S3BlobStore`` (and with it ``minio``) only when it is asked for (PEP 562)."""
    if name == "S3BlobStore":
        from drimbox.storage.s3 import S3BlobStore

        return S3BlobStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
