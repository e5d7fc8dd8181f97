"""Index schema migrations and adapter opening (SQLite file, memory)."""

from __future__ import annotations

import threading
from importlib.resources import files
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from drimbox.errors import ConfigurationError, IndexUnavailableError
from drimbox.index import MemoryIndex, SqliteIndex, open_index
from drimbox.index._schema import metadata
from drimbox.index.sqlite import sqlite_engine

OPENERS = 8
SQLITE_SYNCHRONOUS_FULL = 2
"""``PRAGMA synchronous`` value of FULL (sqlite.org/pragma.html#pragma_synchronous)."""


def test_migrated_schema_is_exactly_the_schema_the_code_uses(tmp_path: Path) -> None:
    SqliteIndex(tmp_path / "index.db").close()
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'index.db'}")
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), metadata)
        version = connection.exec_driver_sql("SELECT version_num FROM alembic_version").all()
    engine.dispose()
    assert differences == []
    assert version == [("0002",)]


def test_concurrent_first_opens_migrate_the_database_once(tmp_path: Path) -> None:
    path = tmp_path / "index.db"
    barrier = threading.Barrier(OPENERS)
    errors: list[BaseException] = []

    def open_once() -> None:
        barrier.wait()
        try:
            SqliteIndex(path).close()
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=open_once) for _ in range(OPENERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    engine = sa.create_engine(f"sqlite:///{path}")
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM alembic_version").scalar() == 1
    engine.dispose()


def test_sqlite_connections_are_durable_and_shared_safely(tmp_path: Path) -> None:
    engine = sqlite_engine(f"sqlite:///{tmp_path / 'x.db'}", "BEGIN IMMEDIATE")
    with engine.connect() as connection:
        pragma = connection.exec_driver_sql
        assert pragma("PRAGMA journal_mode").scalar() == "wal"
        assert pragma("PRAGMA synchronous").scalar() == SQLITE_SYNCHRONOUS_FULL
        assert pragma("PRAGMA foreign_keys").scalar() == 1
        assert (pragma("PRAGMA busy_timeout").scalar() or 0) > 0
    engine.dispose()


def test_open_index_chooses_the_adapter_by_url_scheme(tmp_path: Path) -> None:
    assert isinstance(open_index("memory://"), MemoryIndex)
    index = open_index(f"sqlite:///{tmp_path / 'index.db'}")
    assert isinstance(index, SqliteIndex)
    index.close()
    with pytest.raises(ConfigurationError, match="unsupported index URL"):
        open_index("mysql://localhost/db")
    with pytest.raises(ConfigurationError, match="memory://"):
        open_index("sqlite:///:memory:")


def test_unusable_sqlite_file_is_an_unavailable_index(tmp_path: Path) -> None:
    with pytest.raises(IndexUnavailableError):
        SqliteIndex(tmp_path / "missing-directory" / "index.db")


def test_migrations_ship_as_package_data() -> None:
    migrations = files("drimbox.index.migrations")
    assert migrations.joinpath("env.py").is_file()
    assert migrations.joinpath("script.py.mako").is_file()
    assert migrations.joinpath("versions", "0001_initial.py").is_file()
    assert migrations.joinpath("versions", "__init__.py").is_file()
