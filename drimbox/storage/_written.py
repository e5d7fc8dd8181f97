"""The :class:`drimbox.ports.BlobWrite` of a store whose writes are durable when they return."""

from __future__ import annotations

import logging
from collections.abc import Callable

from drimbox.model import StoredBlob

__all__ = ["DurableWrite"]

_log = logging.getLogger("drimbox.storage")


class DurableWrite:
    """An object already durable (a completed S3 PUT, a memory store's dictionary entry).

    Parameters
    ----------
    blob
        What the store's ``put`` returned.
    delete
        The store's ``delete``, for :meth:`discard`.
    """

    def __init__(self, blob: StoredBlob, delete: Callable[[str], None]) -> None:
        self._blob = blob
        self._delete = delete

    def stored(self) -> StoredBlob:
        """Return the object."""
        return self._blob

    def wait_durable(self) -> StoredBlob:
        """Return the object: it is durable already."""
        return self._blob

    def discard(self) -> None:
        """Delete the object; a failure is logged (the orphan is found by ``drimbox verify``)."""
        try:
            self._delete(self._blob.key)
        except Exception as error:
            _log.error("storage.discard_failed key=%s error=%s", self._blob.key, error)
