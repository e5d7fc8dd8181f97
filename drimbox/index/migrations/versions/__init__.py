"""Alembic revisions of the index schema, applied in order by ``upgrade head``."""
