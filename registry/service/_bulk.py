"""Bulk loading into PostgreSQL with ``COPY ... FROM STDIN (FORMAT BINARY)`` (psycopg 3).

One batch is one transaction: the entry keys are reserved from the table's sequence in one
round trip, then both tables are streamed with ``COPY``, which costs a fraction of a row-by-row
``INSERT``. Used by the synthetic loader; regular publishes go through the store.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from psycopg import sql
from psycopg.copy import QueuedLibpqWriter
from sqlalchemy import Column, Engine

from registry.service._schema import documents, entries

__all__ = ["copy_entries"]

#: SQL type keywords -> the psycopg type names ``Copy.set_types`` knows.
_COPY_TYPES = {
    "BIGINT": "int8",
    "INTEGER": "int4",
    "VARCHAR": "varchar",
    "TEXT": "text",
    "DATE": "date",
    "TIMESTAMP WITH TIME ZONE": "timestamptz",
    "BOOLEAN": "bool",
    "BYTEA": "bytea",
}


def _copy_type(column: Column[Any], engine: Engine) -> str:
    compiled = column.type.compile(dialect=engine.dialect)
    return _COPY_TYPES[compiled.split("(")[0].strip().upper()]


def _copy_statement(table: str, names: Sequence[str]) -> sql.Composed:
    return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(name) for name in names)
    )


def copy_entries(engine: Engine, rows: Iterable[tuple[dict[str, Any], bytes]], count: int) -> None:
    """Insert prepared ``registry_entry`` rows and their KOS bytes in one transaction.

    The entry rows are streamed to the server as ``rows`` yields them (a writer thread sends
    while the caller builds the next rows); their KOS bytes follow in a second ``COPY``.

    Parameters
    ----------
    engine
        A PostgreSQL engine (psycopg 3 driver).
    rows
        ``(entry row without its pk, KOS bytes)`` pairs, as built by ``entry_row``.
    count
        How many pairs ``rows`` yields (their keys are reserved up front).
    """
    columns = [column for column in entries.columns if column.name != entries.c.pk.name]
    names = [column.name for column in columns]
    entry_types = ["int8", *(_copy_type(column, engine) for column in columns)]
    raw = engine.raw_connection()
    try:
        connection = raw.driver_connection
        assert connection is not None
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
                (entries.name, entries.c.pk.name, count),
            )
            keys = [key for (key,) in cursor.fetchall()]
            contents: list[bytes] = []
            statement = _copy_statement(entries.name, [entries.c.pk.name, *names])
            with cursor.copy(statement, writer=QueuedLibpqWriter(cursor)) as copy:
                copy.set_types(entry_types)
                for key, (row, kos) in zip(keys, rows, strict=True):
                    copy.write_row((key, *[row[name] for name in names]))
                    contents.append(kos)
            content_names = [documents.c.entry_pk.name, documents.c.content.name]
            with cursor.copy(_copy_statement(documents.name, content_names)) as copy:
                copy.set_types(["int8", "bytea"])
                for key, kos in zip(keys, contents, strict=True):
                    copy.write_row((key, kos))
        raw.commit()
    except BaseException:
        raw.rollback()
        raise
    finally:
        raw.close()
