"""Contract of the PublicationStore port, run against every adapter (memory, SQLite, PostgreSQL)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from drimbox.index.publications import MemoryPublicationStore, SqlPublicationStore
from drimbox.model import Exam, ExamState, JobAction, JobState, OutboxJob
from drimbox.ports import PublicationStore

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PublicationStore]:
    adapter: PublicationStore
    if request.param == "memory":
        adapter = MemoryPublicationStore()
    elif request.param == "sqlite":
        adapter = SqlPublicationStore(f"sqlite:///{tmp_path / 'index.sqlite3'}")
    else:
        adapter = SqlPublicationStore(request.getfixturevalue("postgres_url"))
    yield adapter
    adapter.close()


def _exam(study: str = "1.2.3", state: ExamState = ExamState.QUEUED, version: int = 1) -> Exam:
    return Exam(
        study_instance_uid=study,
        state=state,
        reason=None,
        version=version,
        report={"report_id": "r1", "accession_number": "ACC"},
        kos_sop_instance_uid=f"{study}.9.{version}",
        registry_entry_id=None,
        updated_at=T0,
    )


def _job(
    study: str = "1.2.3", action: JobAction = JobAction.PUBLISH, version: int = 1
) -> OutboxJob:
    return OutboxJob(
        job_id=0,
        study_instance_uid=study,
        action=action,
        version=version,
        kos_sop_instance_uid=f"{study}.9.{version}",
        kos_blob_key="k" * 32,
        submission={"patient_value": "1", "modalities": ["CT"]},
        replaces=None,
        state=JobState.PENDING,
        attempts=0,
        next_attempt_at=T0,
        last_error=None,
        registry_entry_id=None,
        created_at=T0,
    )


def test_adapters_satisfy_the_port(store: PublicationStore) -> None:
    assert isinstance(store, PublicationStore)


def test_exam_round_trip_and_update(store: PublicationStore) -> None:
    assert store.get_exam("1.2.3") is None
    exam = _exam()
    store.save_exam(exam)
    assert store.get_exam("1.2.3") == exam
    changed = replace(exam, state=ExamState.QUARANTINED, reason="INS not qualified")
    store.save_exam(changed)
    assert store.get_exam("1.2.3") == changed
    assert store.exams() == [changed]


def test_queue_assigns_increasing_ids_and_saves_the_exam(store: PublicationStore) -> None:
    first = store.queue_job(_exam(), _job())
    second = store.queue_job(_exam(version=2), _job(action=JobAction.REPLACE, version=2))
    assert 0 < first.job_id < second.job_id
    assert store.get_exam("1.2.3") == _exam(version=2)
    assert [job.job_id for job in store.jobs("1.2.3")] == [first.job_id, second.job_id]
    assert store.jobs()[0] == first


def test_only_the_oldest_pending_job_of_an_exam_is_due(store: PublicationStore) -> None:
    first = store.queue_job(_exam(), _job())
    store.queue_job(_exam(version=2), _job(action=JobAction.REPLACE, version=2))
    other = store.queue_job(_exam("1.2.4"), _job("1.2.4"))
    assert [job.job_id for job in store.due_jobs(T0)] == [first.job_id, other.job_id]
    store.finish_job(replace(first, state=JobState.DONE, registry_entry_id="e1"), _exam())
    due = store.due_jobs(T0)
    assert [job.version for job in due if job.study_instance_uid == "1.2.3"] == [2]


def test_postponed_jobs_are_not_due_before_their_time(store: PublicationStore) -> None:
    job = store.queue_job(_exam(), _job())
    later = replace(job, attempts=1, next_attempt_at=T0 + timedelta(seconds=30), last_error="down")
    store.postpone_job(later)
    assert store.due_jobs(T0) == []
    assert store.due_jobs(T0 + timedelta(seconds=30)) == [later]
    # A postponed head blocks the exam's later jobs: order is preserved.
    store.queue_job(_exam(version=2), _job(action=JobAction.REPLACE, version=2))
    assert store.due_jobs(T0 + timedelta(seconds=1)) == []


def test_finish_records_job_and_exam_together(store: PublicationStore) -> None:
    job = store.queue_job(_exam(), _job())
    done = replace(job, state=JobState.DONE, attempts=1, registry_entry_id="entry-1")
    exam = replace(_exam(), state=ExamState.PUBLISHED, registry_entry_id="entry-1")
    store.finish_job(done, exam)
    assert store.jobs() == [done]
    assert store.get_exam("1.2.3") == exam
    assert store.due_jobs(T0 + timedelta(days=1)) == []


def test_concurrent_queueing_loses_nothing(store: PublicationStore) -> None:
    def queue(worker: int) -> None:
        for number in range(10):
            study = f"1.2.{worker}.{number}"
            store.queue_job(_exam(study), _job(study))

    threads = [threading.Thread(target=queue, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    jobs = store.jobs()
    assert len(jobs) == 40
    assert len({job.job_id for job in jobs}) == 40
    assert len(store.exams()) == 40
