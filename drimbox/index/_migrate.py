"""Bring an index database to the latest schema (``alembic upgrade head``) at open.

Several processes may open the same database at once: the upgrade runs inside one transaction
that first takes a lock every other opener waits for: ``BEGIN IMMEDIATE`` on SQLite (the
database's write lock) and a transaction-level advisory lock on PostgreSQL. DDL is transactional
on both, so a second opener finds the schema complete and has nothing to do.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

__all__ = ["MIGRATIONS_DIRECTORY", "MIGRATION_LOCK_KEY", "alembic_config", "upgrade_to_head"]

MIGRATIONS_DIRECTORY = Path(__file__).resolve().parent / "migrations"
"""Where the Alembic environment and revisions live (package data)."""

MIGRATION_LOCK_KEY = 0x0D21_1B0C
"""PostgreSQL advisory lock key serialising schema upgrades of the index."""


def alembic_config(connection: sa.Connection | None = None) -> Config:
    """Build the Alembic configuration in code (no ``alembic.ini``)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIRECTORY))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade_to_head(engine: sa.Engine) -> None:
    """Upgrade the database behind ``engine`` to the latest revision, under a lock.

    Parameters
    ----------
    engine
        For SQLite, an engine whose transactions begin with ``BEGIN IMMEDIATE``.
    """
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATION_LOCK_KEY)))
        command.upgrade(alembic_config(connection), "head")
