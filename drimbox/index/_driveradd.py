"""Run the add transaction (:mod:`drimbox.index._sqladd`) on a pooled driver connection.

SQLite: ``BEGIN IMMEDIATE`` (the write lock up front, so that two writers never deadlock
upgrading a read lock), the statements one by one, ``COMMIT``. PostgreSQL (psycopg 3): ``BEGIN``
and the one combined statement in a pipeline (one round trip), the follow-ups if any,
``COMMIT``.

Driver errors come out as :class:`sqlalchemy.exc.DBAPIError`, as if the statements had run
through SQLAlchemy, so that :class:`drimbox.index.sql.SqlIndex` retries and reports them as any
other write. A connection the driver reports as broken is discarded with its pool; if that
happened before the commit was sent, the add is tried once more on a new connection (nothing
was committed), which lets PostgreSQL pools skip the ``SELECT 1`` ping before each add.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import sqlalchemy as sa

from drimbox.index._sqladd import POSTGRESQL, Statement, add_statements, returned_lengths
from drimbox.index._sqlfinish import finish_add, run_add
from drimbox.index._sqlwrite import DuplicateInstanceError

__all__ = ["CONNECTION_ATTEMPTS", "SQLITE_BEGIN_WRITE", "DriverAdd"]

SQLITE_BEGIN_WRITE = "BEGIN IMMEDIATE"
CONNECTION_ATTEMPTS = 2
"""Connections tried by an add whose connection turned out broken before its commit."""


class _BrokenBeforeCommitError(Exception):
    """The connection broke before the commit was sent: the add may run again."""


class DriverAdd:
    """The add transaction of one engine (SQLite or PostgreSQL through psycopg 3).

    Parameters
    ----------
    engine
        Pool of the connections the adds use.
    lock
        Held around each transaction, e.g. a :class:`drimbox.index._writelock.WriterLock`.
    """

    def __init__(
        self, engine: sa.Engine, lock: AbstractContextManager[object] | None = None
    ) -> None:
        self._engine = engine
        self._lock = nullcontext() if lock is None else lock
        self._dialect = engine.dialect
        self._dbapi_error: type[Exception] = engine.dialect.loaded_dbapi.Error
        self._statements = add_statements(engine.dialect.name)
        self._pipelined = engine.dialect.name == POSTGRESQL
        self._begin = None if self._pipelined else SQLITE_BEGIN_WRITE
        self._row_ends = tuple(itertools.accumulate(returned_lengths()))  # combined row's parts

    def __call__(self, values: dict[str, Any]) -> None:
        """Add the instance described by the flat ``values``; return once durably committed.

        Raises
        ------
        DuplicateInstanceError, ReparentError
            As :func:`drimbox.index._sqlfinish.finish_add` (rolled back).
        sqlalchemy.exc.DBAPIError
            The driver failed (rolled back, or commit outcome unknown if it failed then).
        """
        for attempt in range(1, CONNECTION_ATTEMPTS + 1):
            try:
                with self._lock:
                    self._once(values, retry_broken=attempt < CONNECTION_ATTEMPTS)
            except _BrokenBeforeCommitError:
                continue
            return

    def _once(self, values: dict[str, Any], *, retry_broken: bool) -> None:
        pooled = self._engine.raw_connection()
        try:
            connection: Any = pooled.driver_connection
            try:
                if self._pipelined:
                    self._statements_pipelined(connection, values)
                else:
                    self._statements_sequential(connection, values)
            except BaseException as error:
                broken = self._failed(pooled, connection, error)
                if not isinstance(error, self._dbapi_error):
                    raise
                if broken and retry_broken:
                    raise _BrokenBeforeCommitError from error
                raise self._wrapped(error, broken) from error
            try:
                connection.commit()
            except BaseException as error:
                broken = self._failed(pooled, connection, error)
                if not isinstance(error, self._dbapi_error):
                    raise
                raise self._wrapped(error, broken) from error
        finally:
            pooled.close()

    def _failed(self, pooled: Any, connection: Any, error: BaseException) -> bool:
        """Roll back after ``error``; return whether the connection is broken (discarded)."""
        broken = isinstance(error, self._dbapi_error) and self._dialect.is_disconnect(
            error,  # type: ignore[arg-type]  # the driver's Error is the DB-API Error
            connection,
            None,
        )
        if not broken:
            try:
                connection.rollback()
            except self._dbapi_error:
                broken = True
        if broken:
            pooled.invalidate(error if isinstance(error, Exception) else None)
            self._engine.dispose()  # its other connections are likely broken too
        return broken

    def _wrapped(self, error: Exception, broken: bool) -> BaseException:
        wrapped: BaseException = sa.exc.DBAPIError.instance(
            "add instance",
            None,
            error,
            self._dbapi_error,
            connection_invalidated=broken,
            dialect=self._dialect,
        )
        return wrapped

    def _statements_sequential(self, connection: Any, values: dict[str, Any]) -> None:
        cursor = connection.cursor()
        try:

            def execute(statement: Statement, parameters: dict[str, Any]) -> Sequence[Any] | None:
                cursor.execute(statement.text, statement.parameters(parameters))
                row: Sequence[Any] | None = cursor.fetchone()
                return row

            cursor.execute(self._begin)
            run_add(self._statements, execute, values)
        finally:
            cursor.close()  # resets its statements: none is in progress at the commit

    def _statements_pipelined(self, connection: Any, values: dict[str, Any]) -> None:
        statements = self._statements
        combined = statements.combined
        assert combined is not None
        cursor = connection.cursor()
        with connection.pipeline():  # BEGIN and the statement in one round trip
            cursor.execute(combined.text, values, prepare=True)
        row = cursor.fetchone()
        if row is None:  # held or rejected: nothing was written
            # COMMIT, not ROLLBACK: psycopg forgets its prepared statements on a rollback.
            connection.commit()
            raise DuplicateInstanceError(values["SOPInstanceUID"])
        inserted = row[-1]
        patient_end, study_end, series_end = self._row_ends
        rows = (
            None,
            row[:patient_end],
            row[patient_end:study_end],
            row[study_end:series_end],
            None if inserted is None else (inserted,),
        )

        def execute(statement: Statement, parameters: dict[str, Any]) -> Sequence[Any] | None:
            cursor.execute(statement.text, parameters)
            result: Sequence[Any] | None = cursor.fetchone() if cursor.description else None
            return result

        finish_add(statements, execute, values, rows)
