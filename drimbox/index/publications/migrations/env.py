"""Alembic environment of the publication store: programmatic only (no alembic.ini)."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from drimbox.index.publications._schema import metadata

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError("the publication migrations run only through drimbox.index.publications")
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table="publication_alembic_version",
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
