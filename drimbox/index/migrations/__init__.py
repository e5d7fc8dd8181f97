"""Alembic migrations of the index schema (run at open by :mod:`drimbox.index._migrate`)."""
