"""Durable state of the source workflow (exams and the registry outbox) on SQLAlchemy Core.

It lives in the index database (same SQLite file or PostgreSQL database) with its own tables and
its own migration stream (version table ``publication_alembic_version``), so it evolves
independently of the instance index.
"""

from __future__ import annotations

from drimbox.index.publications.memory import MemoryPublicationStore
from drimbox.index.publications.store import SqlPublicationStore, open_publication_store

__all__ = ["MemoryPublicationStore", "SqlPublicationStore", "open_publication_store"]
