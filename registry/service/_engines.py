"""Engines of the registry store: PostgreSQL (pool, autocommit reads) and SQLite (pragmas).

SQLite writers take the write lock up front (``BEGIN IMMEDIATE``, requested with the
:data:`WRITE_OPTION` execution option) so concurrent writers queue instead of failing.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.pool import ConnectionPoolEntry

__all__ = ["WRITE_OPTION", "postgresql_engines", "sqlite_engine"]

#: Execution option of a connection that will write (SQLite: ``BEGIN IMMEDIATE``).
WRITE_OPTION = "registry_write"
_SQLITE_BUSY_TIMEOUT_S = 30.0
#: PostgreSQL pool: connections kept per worker process, extra ones under bursts.
_POOL_SIZE = 8
_POOL_OVERFLOW = 16
_POOL_RECYCLE_S = 3600
#: Executions of a statement before psycopg prepares it server-side (its default is 5).
_PREPARE_THRESHOLD = 2
#: SQLite: 64 MiB of page cache per connection (negative = KiB), memory-mapped reads.
_SQLITE_CACHE_KIB = 64 * 1024
_SQLITE_MMAP_BYTES = 1024 * 1024 * 1024


def postgresql_engines(url: str) -> tuple[Engine, Engine]:
    """Return the engine and its autocommit twin for reads (same pool).

    No ``pool_pre_ping``: it cost a round trip per request; a connection that broke (database
    restart) fails its statement instead, the request is answered 503 (retryable) and
    SQLAlchemy invalidates the pool. A single-statement read needs no transaction: reads run in
    autocommit, one round trip (no ``BEGIN``/``ROLLBACK``). psycopg prepares a statement on
    the server once it has run :data:`_PREPARE_THRESHOLD` times on a connection.
    """
    engine = create_engine(
        url,
        pool_size=_POOL_SIZE,
        max_overflow=_POOL_OVERFLOW,
        pool_recycle=_POOL_RECYCLE_S,
        connect_args={"prepare_threshold": _PREPARE_THRESHOLD},
    )
    return engine, engine.execution_options(isolation_level="AUTOCOMMIT")


def sqlite_engine(url: str) -> Engine:
    """Return a SQLite engine: WAL, 64 MiB page cache and memory-mapped reads per connection."""
    engine = create_engine(url, connect_args={"timeout": _SQLITE_BUSY_TIMEOUT_S})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
        cursor = dbapi_connection.cursor()
        for pragma in (
            "journal_mode=WAL",
            "synchronous=NORMAL",
            "foreign_keys=ON",
            "case_sensitive_like=ON",  # same LIKE semantics as PostgreSQL
            f"cache_size=-{_SQLITE_CACHE_KIB}",
            f"mmap_size={_SQLITE_MMAP_BYTES}",
            "temp_store=MEMORY",
        ):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        write = connection.get_execution_options().get(WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine
