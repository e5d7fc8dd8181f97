"""The Index port on SQLAlchemy Core: one implementation for SQLite and PostgreSQL.

Adding an instance is one transaction: upsert patient, study and series, insert the instance,
update the counters. Concurrent adds of the same SOP Instance UID (threads or processes) give
exactly one ``STORED``: the instance insert is ``ON CONFLICT DO NOTHING`` on its unique key.
It is ingest's hot path, so it runs precompiled SQL on the driver's cursor
(:mod:`drimbox.index._sqladd`, :mod:`drimbox.index._sqlfinish`,
:mod:`drimbox.index._driveradd`); everything else goes through SQLAlchemy Core.

Patient, study and series attributes: the first non-empty value wins (a later instance only fills
attributes still empty). An instance whose series already belongs to another study (or whose
study belongs to another patient) is indexed under the existing parents.

IOCM rejection (:meth:`SqlIndex.reject_instances`) moves instances out of the level tables to
tombstones that keep their blob keys: hidden from every read, refused if received again.

Stability: each add (and each rejection) bumps the study's ``revision`` and clears ``stable``;
:meth:`SqlIndex.unstable_studies` remembers the revisions it saw, and
:meth:`SqlIndex.mark_stable` is a compare-and-set on that revision.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime
from typing import Any, TypeVar

import sqlalchemy as sa

from drimbox.errors import DrimboxError, IndexUnavailableError
from drimbox.index._dicomjson import RenderedMatches
from drimbox.index._driveradd import DriverAdd
from drimbox.index._migrate import upgrade_to_head
from drimbox.index._query import plan_query
from drimbox.index._records import flat_values, microseconds
from drimbox.index._schema import instances, patients, rejected_instances, series, studies
from drimbox.index._sqlsearch import build_search, parent_joins
from drimbox.index._sqlwrite import (
    AnyRow,
    DuplicateInstanceError,
    ReparentError,
    reject_instances_in,
    remove_instance_in,
)
from drimbox.model import (
    AddOutcome,
    DicomJson,
    IndexStatistics,
    InstanceLocation,
    InstanceRecord,
    Level,
    Query,
    SearchResult,
    StoredBlob,
)

__all__ = ["METADATA_BATCH", "REPARENT_ATTEMPTS", "WRITE_ATTEMPTS", "SqlIndex"]

WRITE_ATTEMPTS = 5
"""Attempts of a write transaction aborted by a deadlock, serialization failure or busy file."""

REPARENT_ATTEMPTS = 3
"""Attempts of an add whose series or study turned out to have other parents."""

METADATA_BATCH = 256
"""Instances whose metadata is read per query while streaming a study's metadata."""

_RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})
"""PostgreSQL serialization_failure and deadlock_detected (PostgreSQL Appendix A)."""

_T = TypeVar("_T")

LOCATION_COLUMNS = (
    instances.c.SOPInstanceUID,
    instances.c.SOPClassUID,
    series.c.SeriesInstanceUID,
    studies.c.StudyInstanceUID,
    instances.c.transfer_syntax_uid,
    instances.c.blob_key,
    instances.c.blob_size,
    instances.c.blob_sha256,
    instances.c.number_of_frames,
    instances.c.pixel_data_offset,
)


def location_of(row: AnyRow) -> InstanceLocation:
    """Build an :class:`InstanceLocation` from a row of :data:`LOCATION_COLUMNS`."""
    return InstanceLocation(
        sop_instance_uid=row.SOPInstanceUID,
        sop_class_uid=row.SOPClassUID,
        series_instance_uid=row.SeriesInstanceUID,
        study_instance_uid=row.StudyInstanceUID,
        transfer_syntax_uid=row.transfer_syntax_uid,
        blob=StoredBlob(key=row.blob_key, size=row.blob_size, sha256=row.blob_sha256),
        number_of_frames=row.number_of_frames,
        pixel_data_offset=row.pixel_data_offset,
    )


def _retryable(error: sa.exc.DBAPIError) -> bool:
    if getattr(error.orig, "sqlstate", None) in _RETRYABLE_SQLSTATES:
        return True
    return "database is locked" in str(error.orig)


class SqlIndex:
    """Index on a relational database through SQLAlchemy Core (thread-safe).

    Parameters
    ----------
    reader
        Engine for read-only transactions.
    writer
        Engine for write transactions (SQLite: one whose transactions ``BEGIN IMMEDIATE``);
        defaults to ``reader``.
    adder
        Engine of :meth:`add_instance`'s transactions, on the driver's cursor (see
        :mod:`drimbox.index._driveradd`); defaults to ``writer``.
    write_lock
        Held around each write transaction (SQLite: a
        :class:`drimbox.index._writelock.WriterLock` queues the file's writers).
    migrate
        Bring the schema to the latest revision at open (under a cross-process lock).
    after_commit
        Makes what was just committed durable, if the commit does not (SQLite: the WAL's
        ``fdatasync``); called after every write transaction, outside ``write_lock``, and
        the write returns only once it has. An ``OSError`` fails the write.
    """

    def __init__(
        self,
        reader: sa.Engine,
        writer: sa.Engine | None = None,
        *,
        adder: sa.Engine | None = None,
        write_lock: AbstractContextManager[object] | None = None,
        migrate: bool = True,
        after_commit: Callable[[], None] | None = None,
    ) -> None:
        self._reader = reader
        self._writer = writer or reader
        self._adder = adder or self._writer
        self._seen_revisions: dict[str, int] = {}
        self._seen_lock = threading.Lock()
        self._rendered = RenderedMatches()
        self._write_lock = nullcontext() if write_lock is None else write_lock
        self._add = DriverAdd(self._adder, self._write_lock)
        self._after_commit = after_commit
        if migrate:
            with self._guard():
                upgrade_to_head(self._writer)
            self._made_durable()

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """Translate database failures into :class:`IndexUnavailableError`."""
        try:
            yield
        except DrimboxError:
            raise
        except sa.exc.SQLAlchemyError as error:
            raise IndexUnavailableError(
                f"the index database failed: {type(error).__name__}"
            ) from error

    def _write(self, work: Callable[[sa.Connection], _T]) -> _T:
        def transaction() -> _T:
            with self._write_lock, self._writer.begin() as connection:
                return work(connection)

        result = self._retrying(transaction)
        self._made_durable()
        return result

    def _made_durable(self) -> None:
        """Run ``after_commit``; its failure fails the write (committed, maybe not durable)."""
        if self._after_commit is None:
            return
        try:
            self._after_commit()
        except OSError as error:
            raise IndexUnavailableError(
                f"the index commit could not be made durable: {error.strerror or error}"
            ) from error

    def _retrying(self, transaction: Callable[[], _T]) -> _T:
        """Run a write transaction, again after a deadlock, serialization failure or busy file."""
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                with self._guard_retry(attempt):
                    return transaction()
            except _RetryError:
                continue
        raise AssertionError("unreachable")  # pragma: no cover

    @contextmanager
    def _guard_retry(self, attempt: int) -> Iterator[None]:
        try:
            with self._guard():
                yield
        except IndexUnavailableError as error:
            cause = error.__cause__
            if (
                attempt < WRITE_ATTEMPTS
                and isinstance(cause, sa.exc.DBAPIError)
                and _retryable(cause)
            ):
                raise _RetryError from error
            raise

    def _read(self) -> AbstractContextManager[sa.Connection]:
        return self._reader.connect()

    def add_instance(self, record: InstanceRecord) -> AddOutcome:
        """Index a new instance atomically; ``DUPLICATE`` if its SOP Instance UID is held."""
        values = flat_values(record)
        for _ in range(REPARENT_ATTEMPTS):
            try:
                self._retrying(lambda: self._add(values))
            except DuplicateInstanceError:
                self._made_durable()  # the held row may be another writer's, committed just now
                return AddOutcome.DUPLICATE
            except ReparentError as moved:
                values.update(moved.parents)
            else:
                try:
                    self._made_durable()
                except IndexUnavailableError:
                    self._take_back(record)
                    raise
                return AddOutcome.STORED
        raise IndexUnavailableError("the instance's series kept moving between studies")

    def _take_back(self, record: InstanceRecord) -> None:
        """Remove the row just added whose commit could not be made durable (if still ours).

        Best effort: a row left behind points to a blob the caller deletes, which the start-up
        check and ``drimbox verify`` report.
        """
        with contextlib.suppress(DrimboxError):
            held = self.get_instance(record.sop_instance_uid)
            if held is not None and held.blob.key == record.blob.key:
                self.remove_instance(record.sop_instance_uid)

    def get_instance(self, sop_instance_uid: str) -> InstanceLocation | None:
        """Return where an instance is stored, or ``None``."""
        statement = (
            sa.select(*LOCATION_COLUMNS)
            .select_from(parent_joins(Level.IMAGE, Level.STUDY))
            .where(instances.c.SOPInstanceUID == sop_instance_uid)
        )
        with self._guard(), self._read() as connection:
            row = connection.execute(statement).first()
        return None if row is None else location_of(row)

    def newest_instances(self, limit: int) -> list[InstanceLocation]:
        """Return the last ``limit`` instances indexed, newest first (by row id)."""
        statement = (
            sa.select(*LOCATION_COLUMNS)
            .select_from(parent_joins(Level.IMAGE, Level.STUDY))
            .order_by(instances.c.id.desc())
            .limit(limit)
        )
        with self._guard(), self._read() as connection:
            return [location_of(row) for row in connection.execute(statement)]

    def _selection(
        self, columns: tuple[Any, ...], study: str, series_uid: str | None, sop: str | None
    ) -> sa.Select[*tuple[Any, ...]]:
        statement = (
            sa.select(*columns)
            .select_from(parent_joins(Level.IMAGE, Level.STUDY))
            .where(studies.c.StudyInstanceUID == study)
        )
        if series_uid is not None:
            statement = statement.where(series.c.SeriesInstanceUID == series_uid)
        if sop is not None:
            statement = statement.where(instances.c.SOPInstanceUID == sop)
        return statement.order_by(
            series.c.series_number_order.nulls_last(),
            series.c.SeriesInstanceUID,
            instances.c.instance_number_order.nulls_last(),
            instances.c.SOPInstanceUID,
        )

    def locate(
        self,
        study_instance_uid: str,
        series_instance_uid: str | None = None,
        sop_instance_uid: str | None = None,
    ) -> list[InstanceLocation]:
        """Return the selected instances, by series number then instance number."""
        statement = self._selection(
            LOCATION_COLUMNS, study_instance_uid, series_instance_uid, sop_instance_uid
        )
        with self._guard(), self._read() as connection:
            return [location_of(row) for row in connection.execute(statement)]

    def metadata_documents(
        self,
        study_instance_uid: str,
        series_instance_uid: str | None = None,
        sop_instance_uid: str | None = None,
    ) -> Iterator[str]:
        """Yield the stored JSON text of the selected instances (same order as ``locate``)."""
        statement = self._selection(
            (instances.c.id,), study_instance_uid, series_instance_uid, sop_instance_uid
        )
        with self._guard(), self._read() as connection:
            identifiers = list(connection.execute(statement).scalars())
        for start in range(0, len(identifiers), METADATA_BATCH):
            batch = identifiers[start : start + METADATA_BATCH]
            with self._guard(), self._read() as connection:
                rows = connection.execute(
                    sa.select(instances.c.id, instances.c.metadata).where(instances.c.id.in_(batch))
                )
                texts: dict[int, str] = {row.id: row.metadata for row in rows}
            yield from (texts[i] for i in batch if i in texts)

    def metadata(
        self,
        study_instance_uid: str,
        series_instance_uid: str | None = None,
        sop_instance_uid: str | None = None,
    ) -> Iterator[DicomJson]:
        """Yield the DICOM JSON metadata of the selected instances."""
        for text in self.metadata_documents(
            study_instance_uid, series_instance_uid, sop_instance_uid
        ):
            document: DicomJson = json.loads(text)
            yield document

    def search(self, query: Query) -> SearchResult:
        """Match a hierarchical query (PS3.4 §C.2.2.2); see :mod:`drimbox.index._query`.

        Each match is a fresh dict, but its element objects may be shared with other results:
        add or remove attributes freely, never change an element in place.
        """
        plan = plan_query(query)
        statement = build_search(plan)
        with self._guard(), self._read() as connection:
            rows = connection.execute(statement).all()
        matches = self._rendered.render(plan.returned, rows[: plan.limit])
        return SearchResult(matches=matches, truncated=len(rows) > plan.limit)

    def remove_instance(self, sop_instance_uid: str) -> InstanceLocation | None:
        """Remove an instance; empty series, studies and patients go too."""
        row = self._write(
            lambda connection: remove_instance_in(connection, sop_instance_uid, LOCATION_COLUMNS)
        )
        return None if row is None else location_of(row)

    def reject_instances(self, sop_instance_uids: Iterable[str]) -> int:
        """Hide instances rejected by IOCM for good; return how many were indexed.

        Every UID gets a tombstone, so an instance rejected before it arrives stays out too.
        Studies that lost instances become unstable (their manifest is then rebuilt).
        """
        uids = list(sop_instance_uids)
        now = microseconds(datetime.now(UTC))
        return self._write(
            lambda connection: reject_instances_in(connection, uids, LOCATION_COLUMNS, now)
        )

    def statistics(self) -> IndexStatistics:
        """Return entity counts and the total stored bytes."""
        count = sa.func.count
        statement = sa.select(
            sa.select(count()).select_from(patients).scalar_subquery(),
            sa.select(count()).select_from(studies).scalar_subquery(),
            sa.select(count()).select_from(series).scalar_subquery(),
            sa.select(count()).select_from(instances).scalar_subquery(),
            sa.select(sa.func.coalesce(sa.func.sum(instances.c.blob_size), 0)).scalar_subquery(),
        )
        with self._guard(), self._read() as connection:
            row = connection.execute(statement).one()
        return IndexStatistics(*(int(value) for value in row))

    def blob_keys(self) -> Iterator[str]:
        """Yield the blob key of every indexed or rejected instance (bytes still to keep)."""
        yield from self._keys_of(instances)
        yield from self._keys_of(rejected_instances)

    def _keys_of(self, table: sa.Table) -> Iterator[str]:
        last = 0
        while True:
            statement = (
                sa.select(table.c.id, table.c.blob_key)
                .where(table.c.id > last, table.c.blob_key.is_not(None))
                .order_by(table.c.id)
                .limit(METADATA_BATCH * 4)
            )
            with self._guard(), self._read() as connection:
                rows = connection.execute(statement).all()
            if not rows:
                return
            yield from (row.blob_key for row in rows)
            last = rows[-1].id

    def unstable_studies(self, quiet_since: datetime) -> list[str]:
        """Return unstable studies whose last instance arrived before ``quiet_since``."""
        statement = (
            sa.select(studies.c.StudyInstanceUID, studies.c.revision)
            .where(studies.c.stable.is_(False))
            .where(studies.c.last_received_at < microseconds(quiet_since))
            .order_by(studies.c.last_received_at, studies.c.StudyInstanceUID)
        )
        with self._guard(), self._read() as connection:
            rows = connection.execute(statement).all()
        with self._seen_lock:
            self._seen_revisions.update((row.StudyInstanceUID, row.revision) for row in rows)
        return [row.StudyInstanceUID for row in rows]

    def mark_stable(self, study_instance_uid: str) -> bool:
        """Mark a study stable unless it received an instance since ``unstable_studies``."""
        with self._seen_lock:
            revision = self._seen_revisions.pop(study_instance_uid, None)
        statement = (
            sa.update(studies)
            .where(studies.c.StudyInstanceUID == study_instance_uid)
            .values(stable=True)
        )
        if revision is not None:
            statement = statement.where(studies.c.revision == revision)
        changed = self._write(lambda connection: connection.execute(statement).rowcount)
        return bool(changed == 1)

    def close(self) -> None:
        """Release every pooled connection."""
        for engine in {self._reader, self._writer, self._adder}:
            engine.dispose()


class _RetryError(Exception):
    """A write transaction must be retried."""
