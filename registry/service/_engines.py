"""Engines of the registry store: PostgreSQL (pool, autocommit reads) and SQLite (pragmas).

SQLite writers take the write lock up front (``BEGIN IMMEDIATE``, requested with the
:data:`WRITE_OPTION` execution option) so concurrent writers queue instead of failing.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Mapping
from typing import Any

import psycopg
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import ConnectionPoolEntry

__all__ = ["WRITE_OPTION", "AutocommitStatements", "postgresql_engines", "sqlite_engine"]

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


class AutocommitStatements:
    """Single statements run on plain psycopg connections in autocommit (the publish hot path).

    SQLAlchemy's ``Connection`` around the one publish statement (pool checkout with its
    events, the autocommit isolation level set and reset, execution context and result set-up)
    cost ≈ 0.15 ms of CPU per publish, more than the statement's own client side. These
    connections are made from the engine's URL, kept open (at most :data:`_POOL_SIZE` idle),
    and at most :data:`_POOL_SIZE` + :data:`_POOL_OVERFLOW` are in use at once, like the
    engine's pool. A connection whose statement failed is closed, not reused (a restarted
    database costs one failed statement per idle connection, as with the engine's pool); errors
    are raised as SQLAlchemy's ``DBAPIError`` subclasses, like the rest of the store.
    """

    def __init__(self, engine: Engine) -> None:
        arguments, options = engine.dialect.create_connect_args(engine.url)
        self._arguments, self._options = arguments, dict(options)
        self._idle: queue.SimpleQueue[psycopg.Connection[Any]] = queue.SimpleQueue()
        self._in_use = threading.BoundedSemaphore(_POOL_SIZE + _POOL_OVERFLOW)

    def _connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(
            *self._arguments,
            **self._options,
            autocommit=True,
            prepare_threshold=_PREPARE_THRESHOLD,
        )

    def first_row(self, statement: str, parameters: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """Run ``statement`` (driver SQL, ``%(name)s`` parameters); return its first row.

        A broken idle connection (database restarted, backend terminated) drops every idle
        connection and the statement runs once more on a new one (the retried statement must
        be idempotent, as the publish is: ``ON CONFLICT DO NOTHING``).
        """
        with self._in_use:
            while True:
                try:
                    connection, idle = self._idle.get_nowait(), True
                except queue.Empty:
                    connection, idle = None, False
                try:
                    if connection is None:
                        connection = self._connect()
                    row = connection.execute(statement, parameters).fetchone()
                except psycopg.Error as error:
                    broken = connection is None or connection.broken
                    if connection is not None:
                        connection.close()
                    if broken and idle:
                        self.close()  # the others are likely broken too
                        continue
                    raise DBAPIError.instance(
                        statement, None, error, psycopg.Error, hide_parameters=True
                    ) from error
                if self._idle.qsize() < _POOL_SIZE:
                    self._idle.put(connection)
                else:
                    connection.close()
                return None if row is None else tuple(row)

    def close(self) -> None:
        """Close the idle connections (one in use is closed when its statement ends)."""
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return


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
