"""PostgreSQL index: concurrent first opens, schema identity, unavailable server."""

from __future__ import annotations

import socket
import threading

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from drimbox.errors import IndexUnavailableError
from drimbox.index import PostgresIndex, open_index
from drimbox.index._schema import metadata

pytestmark = pytest.mark.integration

OPENERS = 4


def test_concurrent_first_opens_migrate_once_and_match_the_schema(postgres_url: str) -> None:
    barrier = threading.Barrier(OPENERS)
    errors: list[BaseException] = []

    def open_once() -> None:
        barrier.wait()
        try:
            PostgresIndex(postgres_url).close()
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=open_once) for _ in range(OPENERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    engine = sa.create_engine(postgres_url)
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), metadata) == []
        assert connection.exec_driver_sql("SELECT version_num FROM alembic_version").all() == [
            ("0002",)
        ]
    engine.dispose()


def test_open_index_accepts_plain_postgresql_urls(postgres_url: str) -> None:
    index = open_index(postgres_url.replace("postgresql+psycopg://", "postgresql://"))
    assert isinstance(index, PostgresIndex)
    assert index.statistics().instances == 0
    index.close()


def test_unreachable_server_is_an_unavailable_index() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(IndexUnavailableError):
        PostgresIndex(f"postgresql+psycopg://app@127.0.0.1:{port}/none")
