"""Alembic environment: programmatic only.

:func:`drimbox.index._migrate.upgrade_to_head` passes an open connection, already holding the
migration lock, in ``config.attributes["connection"]``; there is no ``alembic.ini``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from drimbox.index._schema import metadata

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError("the index migrations run only through drimbox.index (no alembic.ini)")
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
