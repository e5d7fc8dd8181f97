"""The Index port on PostgreSQL (psycopg 3), for scale-out deployments.

Several HTTP workers and DIMSE receivers share one database; the connection pool is per process.
Write transactions run at READ COMMITTED and lock rows top-down; deadlocks and serialization
failures are retried by :class:`drimbox.index.sql.SqlIndex`.
"""

from __future__ import annotations

import sqlalchemy as sa

from drimbox.errors import ConfigurationError
from drimbox.index.sql import SqlIndex

__all__ = ["DEFAULT_POOL_SIZE", "POSTGRESQL_DRIVER", "PostgresIndex"]

POSTGRESQL_DRIVER = "postgresql+psycopg"
DEFAULT_POOL_SIZE = 10
"""Connections kept open per process."""


def _psycopg_url(url: str) -> sa.URL:
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ConfigurationError(f"not a PostgreSQL URL: use {POSTGRESQL_DRIVER}://user@host/db")
    return parsed.set(drivername=POSTGRESQL_DRIVER)


class PostgresIndex(SqlIndex):
    """Index in a PostgreSQL database.

    Parameters
    ----------
    url
        ``postgresql+psycopg://user[:password]@host[:port]/database`` (``postgresql://`` is
        accepted and uses psycopg 3).
    pool_size
        Connections kept open per process (as many again may be opened under load).
    """

    def __init__(self, url: str, *, pool_size: int = DEFAULT_POOL_SIZE) -> None:
        engine = sa.create_engine(
            _psycopg_url(url),
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=True,
        )
        # Adds skip the ping round trip: they retry on a new connection when theirs is broken.
        adder = sa.create_engine(_psycopg_url(url), pool_size=pool_size, max_overflow=pool_size)
        super().__init__(engine, adder=adder)
