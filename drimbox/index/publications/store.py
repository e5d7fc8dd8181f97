"""The publication store on SQLAlchemy Core (SQLite or PostgreSQL)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.exc import SQLAlchemyError

from drimbox.errors import IndexUnavailableError
from drimbox.index.publications._schema import exams, outbox
from drimbox.model import Exam, ExamState, JobAction, JobState, OutboxJob

__all__ = ["SqlPublicationStore", "open_publication_store"]

_MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_MIGRATION_LOCK_KEY = 0x0D21_1B0D
"""PostgreSQL advisory lock key serialising upgrades of the publication tables."""
_SQLITE_BUSY_TIMEOUT_MS = 30_000


def open_publication_store(url: str) -> SqlPublicationStore:
    """Open (and migrate) the publication store in the index database at ``url``."""
    return SqlPublicationStore(url)


class SqlPublicationStore:
    """Exams and outbox jobs in SQL; every method is one transaction.

    Parameters
    ----------
    url
        SQLAlchemy URL (``sqlite:///...`` or ``postgresql+psycopg://...``).
    """

    def __init__(self, url: str) -> None:
        self._engine = _create_engine(url)
        try:
            with self._engine.begin() as connection:
                if connection.dialect.name == "postgresql":
                    connection.execute(
                        sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK_KEY))
                    )
                config = Config()
                config.set_main_option("script_location", str(_MIGRATIONS))
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
        except SQLAlchemyError as error:
            raise IndexUnavailableError(f"cannot open the publication store: {error}") from error

    def get_exam(self, study_instance_uid: str) -> Exam | None:
        """Return the exam, or ``None``."""
        with self._connect() as connection:
            row = connection.execute(
                sa.select(exams).where(exams.c.study_instance_uid == study_instance_uid)
            ).first()
        return None if row is None else _exam(row._mapping)

    def save_exam(self, exam: Exam) -> None:
        """Insert or update an exam."""
        with self._begin() as connection:
            _upsert_exam(connection, exam)

    def queue_job(self, exam: Exam, job: OutboxJob) -> OutboxJob:
        """Save the exam and append the job, atomically."""
        values = _job_values(job)
        with self._begin() as connection:
            _upsert_exam(connection, exam)
            job_id = connection.execute(
                outbox.insert().values(**values).returning(outbox.c.job_id)
            ).scalar_one()
        return _replace_job(job, job_id=int(job_id))

    def due_jobs(self, now: datetime, limit: int = 50) -> list[OutboxJob]:
        """The oldest pending job of each exam, if due at ``now``."""
        head = (
            sa.select(sa.func.min(outbox.c.job_id).label("job_id"))
            .where(outbox.c.state == JobState.PENDING.value)
            .group_by(outbox.c.study_instance_uid)
            .subquery()
        )
        query = (
            sa.select(outbox)
            .join(head, head.c.job_id == outbox.c.job_id)
            .where(outbox.c.next_attempt_at <= now)
            .order_by(outbox.c.job_id)
            .limit(limit)
        )
        with self._connect() as connection:
            return [_job(row._mapping) for row in connection.execute(query)]

    def finish_job(self, job: OutboxJob, exam: Exam) -> None:
        """Record the job's final state and the exam's new state."""
        with self._begin() as connection:
            connection.execute(
                outbox.update()
                .where(outbox.c.job_id == job.job_id)
                .values(
                    state=job.state.value,
                    attempts=job.attempts,
                    last_error=job.last_error,
                    registry_entry_id=job.registry_entry_id,
                )
            )
            _upsert_exam(connection, exam)

    def postpone_job(self, job: OutboxJob) -> None:
        """Record a failed attempt."""
        with self._begin() as connection:
            connection.execute(
                outbox.update()
                .where(outbox.c.job_id == job.job_id)
                .values(
                    attempts=job.attempts,
                    next_attempt_at=job.next_attempt_at,
                    last_error=job.last_error,
                )
            )

    def jobs(self, study_instance_uid: str | None = None) -> list[OutboxJob]:
        """Every job (of one exam), oldest first."""
        query = sa.select(outbox).order_by(outbox.c.job_id)
        if study_instance_uid is not None:
            query = query.where(outbox.c.study_instance_uid == study_instance_uid)
        with self._connect() as connection:
            return [_job(row._mapping) for row in connection.execute(query)]

    def exams(self) -> list[Exam]:
        """Every exam, most recently updated first."""
        query = sa.select(exams).order_by(exams.c.updated_at.desc(), exams.c.study_instance_uid)
        with self._connect() as connection:
            return [_exam(row._mapping) for row in connection.execute(query)]

    def close(self) -> None:
        """Release connections."""
        self._engine.dispose()

    def _connect(self) -> Any:
        return _Translating(self._engine.connect())

    def _begin(self) -> Any:
        return _Translating(self._engine.begin())


class _Translating:
    """Context manager turning SQLAlchemy errors into :class:`IndexUnavailableError`."""

    def __init__(self, manager: Any) -> None:
        self._manager = manager

    def __enter__(self) -> sa.Connection:
        try:
            connection: sa.Connection = self._manager.__enter__()
        except SQLAlchemyError as error:
            raise IndexUnavailableError(f"publication store unavailable: {error}") from error
        return connection

    def __exit__(self, kind: Any, error: Any, traceback: Any) -> None:
        try:
            self._manager.__exit__(kind, error, traceback)
        except SQLAlchemyError as failure:
            raise IndexUnavailableError(f"publication store unavailable: {failure}") from failure
        if isinstance(error, SQLAlchemyError):
            raise IndexUnavailableError(f"publication store unavailable: {error}") from error


def _create_engine(url: str) -> sa.Engine:
    if url.startswith("sqlite"):
        engine = sa.create_engine(
            url, connect_args={"timeout": _SQLITE_BUSY_TIMEOUT_MS / 1000, "isolation_level": None}
        )

        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
            cursor.close()

        @sa.event.listens_for(engine, "begin")
        def _on_begin(connection: sa.Connection) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return sa.create_engine(url, pool_pre_ping=True)


def _upsert_exam(connection: sa.Connection, exam: Exam) -> None:
    values = {
        "state": exam.state.value,
        "reason": exam.reason,
        "version": exam.version,
        "report": json.dumps(exam.report, sort_keys=True),
        "kos_sop_instance_uid": exam.kos_sop_instance_uid,
        "registry_entry_id": exam.registry_entry_id,
        "updated_at": exam.updated_at,
        "referenced_digest": exam.referenced_digest,
    }
    updated = connection.execute(
        exams.update().where(exams.c.study_instance_uid == exam.study_instance_uid).values(values)
    )
    if updated.rowcount == 0:
        connection.execute(
            exams.insert().values(study_instance_uid=exam.study_instance_uid, **values)
        )


def _job_values(job: OutboxJob) -> dict[str, Any]:
    return {
        "study_instance_uid": job.study_instance_uid,
        "action": job.action.value,
        "version": job.version,
        "kos_sop_instance_uid": job.kos_sop_instance_uid,
        "kos_blob_key": job.kos_blob_key,
        "submission": None if job.submission is None else json.dumps(job.submission),
        "replaces": job.replaces,
        "state": job.state.value,
        "attempts": job.attempts,
        "next_attempt_at": job.next_attempt_at,
        "last_error": job.last_error,
        "registry_entry_id": job.registry_entry_id,
        "created_at": job.created_at,
    }


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _exam(row: Any) -> Exam:
    return Exam(
        study_instance_uid=row["study_instance_uid"],
        state=ExamState(row["state"]),
        reason=row["reason"],
        version=row["version"],
        report=json.loads(row["report"]),
        kos_sop_instance_uid=row["kos_sop_instance_uid"],
        registry_entry_id=row["registry_entry_id"],
        updated_at=_utc(row["updated_at"]),
        referenced_digest=row["referenced_digest"],
    )


def _job(row: Any) -> OutboxJob:
    return OutboxJob(
        job_id=row["job_id"],
        study_instance_uid=row["study_instance_uid"],
        action=JobAction(row["action"]),
        version=row["version"],
        kos_sop_instance_uid=row["kos_sop_instance_uid"],
        kos_blob_key=row["kos_blob_key"],
        submission=None if row["submission"] is None else json.loads(row["submission"]),
        replaces=row["replaces"],
        state=JobState(row["state"]),
        attempts=row["attempts"],
        next_attempt_at=_utc(row["next_attempt_at"]),
        last_error=row["last_error"],
        registry_entry_id=row["registry_entry_id"],
        created_at=_utc(row["created_at"]),
    )


def _replace_job(job: OutboxJob, **changes: Any) -> OutboxJob:
    from dataclasses import replace

    return replace(job, **changes)
