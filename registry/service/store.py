"""The registry store: manifests and their KOS on SQLite or PostgreSQL (SQLAlchemy Core).

Writes are short transactions. Publishing is idempotent on the KOS SOP Instance UID (a unique
constraint settles concurrent publishes of the same manifest); a replacement supersedes its
target in the same transaction, only if the target is still current. SQLite writers take the
write lock up front (``BEGIN IMMEDIATE``) so concurrent writers queue instead of failing.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    create_engine,
    event,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import ConnectionPoolEntry

from registry.models import (
    EntryStatus,
    ManifestSubmission,
)
from registry.service._rows import (
    EntryQuery,
    StoredEntry,
    decode_cursor,
    encode_cursor,
    entry_row,
    search_conditions,
    stored_entry,
)
from registry.service._schema import documents, entries, metadata

__all__ = [
    "EntryConflictError",
    "EntryNotFoundError",
    "EntryQuery",
    "PublishOutcome",
    "RegistryStore",
    "StoreError",
    "StoredEntry",
    "entry_row",
]

_WRITE = "registry_write"
_SQLITE_BUSY_TIMEOUT_S = 30.0


class StoreError(Exception):
    """Root of the store errors: ``StoreError`` > ``EntryNotFoundError``, ``EntryConflictError``."""


class EntryNotFoundError(StoreError):
    """No entry has that id (or KOS SOP Instance UID)."""


class EntryConflictError(StoreError):
    """The request contradicts the stored state (different content, target not current...)."""


@dataclass(frozen=True, slots=True)
class PublishOutcome:
    """The entry and whether this call created it (``False``: idempotent republish)."""

    entry: StoredEntry
    created: bool


def _sqlite_engine(url: str) -> Engine:
    engine = create_engine(url, connect_args={"timeout": _SQLITE_BUSY_TIMEOUT_S})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
        cursor = dbapi_connection.cursor()
        for pragma in (
            "journal_mode=WAL",
            "synchronous=NORMAL",
            "foreign_keys=ON",
            "case_sensitive_like=ON",  # same LIKE semantics as PostgreSQL
        ):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        write = connection.get_execution_options().get(_WRITE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


class RegistryStore:
    """Manifests and their KOS bytes in a SQL database.

    Parameters
    ----------
    database_url
        SQLAlchemy URL: ``sqlite:///path.db`` or ``postgresql+psycopg://...``. The tables are
        created at first start (``metadata.create_all``; no migrations yet).
    """

    def __init__(self, database_url: str) -> None:
        if database_url.startswith("sqlite"):
            self._engine = _sqlite_engine(database_url)
        else:
            self._engine = create_engine(database_url, pool_pre_ping=True)
        metadata.create_all(self._engine)

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (used by the loader and benchmarks)."""
        return self._engine

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._engine.dialect.name

    def close(self) -> None:
        """Release every pooled connection."""
        self._engine.dispose()

    def _writer(self) -> Connection:
        return self._engine.connect().execution_options(**{_WRITE: True})

    # -- writes --------------------------------------------------------------------------

    def publish(self, manifest: ManifestSubmission, kos: bytes) -> PublishOutcome:
        """Store a manifest, or return the existing entry for the same KOS and bytes.

        Raises
        ------
        EntryConflictError
            The KOS SOP Instance UID is stored with other bytes or was deleted, or the entry to
            replace is not current or belongs to another patient.
        EntryNotFoundError
            The entry to replace does not exist.
        """
        for _attempt in range(2):
            try:
                return self._publish_once(manifest, kos)
            except IntegrityError:
                continue  # a concurrent publish of the same KOS won: read it back
        raise EntryConflictError("concurrent publications of this KOS did not settle; retry")

    def _publish_once(self, manifest: ManifestSubmission, kos: bytes) -> PublishOutcome:
        digest = hashlib.sha256(kos).hexdigest()
        with self._writer() as connection, connection.begin():
            existing = self._one(
                connection, entries.c.kos_sop_instance_uid == manifest.kos_sop_instance_uid
            )
            if existing is not None:
                return PublishOutcome(_same_publication(existing, manifest, digest), False)
            target = None
            if manifest.replaces is not None:
                target = self._replaced(connection, manifest)
            now = datetime.now(UTC)
            row = entry_row(
                manifest,
                entry_id=str(uuid.uuid4()),
                kos=kos,
                now=now,
                replaces_id=None if target is None else target.entry_id,
            )
            pk = connection.execute(insert(entries).returning(entries.c.pk), row).scalar_one()
            connection.execute(insert(documents), {"entry_pk": pk, "content": kos})
            if target is not None:
                self._set_status(connection, target, EntryStatus.SUPERSEDED, now)
            return PublishOutcome(stored_entry(SimpleNamespace(pk=pk, **row)), True)

    def _replaced(self, connection: Connection, manifest: ManifestSubmission) -> StoredEntry:
        key = manifest.replaces or ""
        target = self._one(
            connection, or_(entries.c.entry_id == key, entries.c.kos_sop_instance_uid == key)
        )
        if target is None:
            raise EntryNotFoundError(f"the entry to replace ({key}) does not exist")
        if (target.manifest.patient_oid, target.manifest.patient_value) != (
            manifest.patient_oid,
            manifest.patient_value,
        ):
            raise EntryConflictError("the entry to replace belongs to another patient")
        if target.status is not EntryStatus.CURRENT:
            raise EntryConflictError(
                f"the entry to replace is {target.status.value}, not current: replace the "
                "current entry of the chain"
            )
        return target

    @staticmethod
    def _set_status(
        connection: Connection, target: StoredEntry, status: EntryStatus, now: datetime
    ) -> None:
        changed = connection.execute(
            update(entries)
            .where(entries.c.pk == target.pk, entries.c.status == EntryStatus.CURRENT.value)
            .values(status=status.value, updated=now)
        ).rowcount
        if changed != 1:
            raise EntryConflictError("the entry changed concurrently (no longer current)")

    def delete(self, entry_id: str) -> StoredEntry:
        """Mark an entry ``entered-in-error`` (de-publication); history is kept.

        Deleting an entry already entered-in-error returns it unchanged; a superseded entry
        cannot be deleted (delete the current entry of its chain).
        """
        with self._writer() as connection, connection.begin():
            entry = self._one(connection, entries.c.entry_id == entry_id)
            if entry is None:
                raise EntryNotFoundError(f"no entry {entry_id}")
            if entry.status is EntryStatus.ENTERED_IN_ERROR:
                return entry
            if entry.status is EntryStatus.SUPERSEDED:
                raise EntryConflictError(
                    "a superseded entry cannot be deleted: delete its successor"
                )
            self._set_status(connection, entry, EntryStatus.ENTERED_IN_ERROR, datetime.now(UTC))
            deleted = self._one(connection, entries.c.pk == entry.pk)
            assert deleted is not None
            return deleted

    def insert_many(self, rows: Sequence[tuple[dict[str, Any], bytes]]) -> None:
        """Insert prepared rows and their KOS in one transaction (bulk loading)."""
        with self._writer() as connection, connection.begin():
            pks = connection.execute(
                insert(entries).returning(entries.c.pk, sort_by_parameter_order=True),
                [row for row, _ in rows],
            ).scalars()
            connection.execute(
                insert(documents),
                [{"entry_pk": pk, "content": kos} for pk, (_, kos) in zip(pks, rows, strict=True)],
            )

    # -- reads ---------------------------------------------------------------------------

    @staticmethod
    def _one(connection: Connection, condition: Any) -> StoredEntry | None:
        row = connection.execute(select(entries).where(condition)).first()
        return None if row is None else stored_entry(row)

    def get(self, entry_id: str) -> StoredEntry | None:
        """Return one entry by id, or ``None``."""
        with self._engine.connect() as connection:
            return self._one(connection, entries.c.entry_id == entry_id)

    def content(self, entry_id: str) -> bytes | None:
        """Return the KOS bytes of an entry, or ``None``."""
        query = (
            select(documents.c.content)
            .join(entries, entries.c.pk == documents.c.entry_pk)
            .where(entries.c.entry_id == entry_id)
        )
        with self._engine.connect() as connection:
            content = connection.execute(query).scalar_one_or_none()
        return None if content is None else bytes(content)

    def search(self, query: EntryQuery) -> tuple[list[StoredEntry], str | None]:
        """Return one page of matching entries (newest exam first) and the next page's cursor.

        Raises
        ------
        ValueError
            The cursor was not issued by this registry.
        """
        statement = select(entries).where(*search_conditions(query))
        if query.cursor is not None:
            start, pk = decode_cursor(query.cursor)
            statement = statement.where(
                or_(
                    entries.c.period_start < start,
                    and_(entries.c.period_start == start, entries.c.pk < pk),
                )
            )
        statement = statement.order_by(entries.c.period_start.desc(), entries.c.pk.desc()).limit(
            query.count + 1
        )
        with self._engine.connect() as connection:
            found = [stored_entry(row) for row in connection.execute(statement)]
        page = found[: query.count]
        more = len(found) > query.count and bool(page)
        return page, encode_cursor(page[-1]) if more else None


def _same_publication(
    existing: StoredEntry, manifest: ManifestSubmission, digest: str
) -> StoredEntry:
    if existing.status is EntryStatus.ENTERED_IN_ERROR:
        raise EntryConflictError(
            "this KOS SOP Instance UID was de-published (entered-in-error): publish a new KOS"
        )
    if existing.content_sha256 != digest or (
        existing.manifest.patient_oid,
        existing.manifest.patient_value,
    ) != (manifest.patient_oid, manifest.patient_value):
        raise EntryConflictError(
            "this KOS SOP Instance UID is already published with other content: "
            "a changed manifest needs a new SOP Instance UID and relatesTo 'replaces'"
        )
    return existing
