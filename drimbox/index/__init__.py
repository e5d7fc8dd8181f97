"""Index adapters: SQLite (embedded default), PostgreSQL (scale-out) and memory.

:func:`open_index` chooses one from a URL; only the composition root should call it.
"""

from __future__ import annotations

from drimbox.errors import ConfigurationError
from drimbox.index._query import MAXIMUM_LIMIT
from drimbox.index.memory import MemoryIndex
from drimbox.index.postgresql import PostgresIndex
from drimbox.index.sql import SqlIndex
from drimbox.index.sqlite import SqliteIndex
from drimbox.ports import Index

__all__ = [
    "MAXIMUM_LIMIT",
    "MEMORY_URL",
    "MemoryIndex",
    "PostgresIndex",
    "SqlIndex",
    "SqliteIndex",
    "open_index",
]

MEMORY_URL = "memory://"
"""URL of a non-persistent index held in the process's memory."""


def open_index(url: str) -> Index:
    """Open the index named by ``url``, migrating its schema to the latest revision.

    Parameters
    ----------
    url
        ``sqlite:///path/to/index.db``, ``postgresql+psycopg://user@host/db`` (or
        ``postgresql://``) or ``memory://``.

    Raises
    ------
    ConfigurationError
        The URL names no supported database.
    IndexUnavailableError
        The database cannot be reached or migrated.
    """
    scheme = url.partition("://")[0].lower()
    if url == MEMORY_URL or scheme == "memory":
        return MemoryIndex()
    if scheme == "sqlite":
        return SqliteIndex(url)
    if scheme in ("postgresql", "postgresql+psycopg", "postgres"):
        return PostgresIndex(url.replace("postgres://", "postgresql://", 1))
    raise ConfigurationError(
        f"unsupported index URL scheme {scheme!r}: use sqlite:///<path>, "
        "postgresql+psycopg://<user>@<host>/<db> or memory://"
    )
