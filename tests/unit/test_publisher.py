"""The outbox publisher: order per exam, backoff while the registry is down, exactly once."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest

from drimbox.audit import MemoryAuditLog
from drimbox.index.publications import MemoryPublicationStore
from drimbox.model import Exam, ExamState, JobAction, JobState, OutboxJob
from drimbox.ports import Registry
from drimbox.services.publisher import Publisher, backoff_delay
from drimbox.storage.memory import MemoryBlobStore
from registry.errors import RegistryRejectedError, RegistryUnavailableError
from registry.models import ManifestSubmission

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


@dataclass
class FakeRegistry:
    """An in-memory registry: idempotent by KOS UID, can be taken down."""

    available: bool = True
    reject_with: str | None = None
    entries: dict[str, tuple[bytes, ManifestSubmission]] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)
    calls: int = 0

    def publish(self, submission: ManifestSubmission, kos: bytes) -> str:
        self.calls += 1
        if not self.available:
            raise RegistryUnavailableError("connection refused")
        if self.reject_with:
            raise RegistryRejectedError(422, self.reject_with, issue_code="business-rule")
        entry_id = f"entry-{submission.kos_sop_instance_uid}"
        self.entries.setdefault(entry_id, (kos, submission))
        return entry_id

    def delete(self, entry_id: str) -> object:
        self.calls += 1
        if not self.available:
            raise RegistryUnavailableError("connection refused")
        self.deleted.append(entry_id)
        return entry_id


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def _submission(kos_uid: str) -> dict[str, object]:
    return {
        "patient_value": "277076322082910",
        "patient_oid": "1.2.250.1.213.1.4.10",
        "kos_sop_instance_uid": kos_uid,
        "study_instance_uid": "1.2.3",
        "source_box_id": "DRIMBOX",
        "period_start": "2026-03-01",
        "period_end": "2026-03-01",
        "accession_number": "ACC1",
        "accession_system": None,
        "modalities": ["CT"],
        "regions": [],
        "author": None,
        "custodian": None,
        "confidentiality": "N",
        "masked": False,
        "identity_qualified": True,
        "document_type": ["http://loinc.org", "18748-4", "Diagnostic imaging study"],
        "title": None,
        "replaces": None,
    }


@pytest.fixture
def world() -> tuple[MemoryPublicationStore, MemoryBlobStore, FakeRegistry, Clock, Publisher]:
    store, blobs, registry, clock = (
        MemoryPublicationStore(), MemoryBlobStore(), FakeRegistry(), Clock()
    )  # fmt: skip
    publisher = Publisher(
        store, blobs, registry, MemoryAuditLog(), clock=clock, rng=random.Random(7),
        base_delay=1.0, max_delay=60.0,
    )  # fmt: skip
    return store, blobs, registry, clock, publisher


def _queue(
    store: MemoryPublicationStore,
    blobs: MemoryBlobStore,
    version: int,
    action: JobAction,
    clock: Clock,
) -> OutboxJob:
    kos_uid = f"1.2.3.9.{version}"
    blob = blobs.put([f"KOS v{version}".encode()])
    previous = store.get_exam("1.2.3")
    exam = Exam(
        "1.2.3", ExamState.QUEUED, None, version, {"message_id": f"m{version}"}, kos_uid,
        previous.registry_entry_id if previous else None, clock.now,
    )  # fmt: skip
    job = OutboxJob(
        0, "1.2.3", action, version, kos_uid,
        blob.key if action is not JobAction.DELETE else None,
        _submission(kos_uid) if action is not JobAction.DELETE else None,
        f"1.2.3.9.{version - 1}" if action is JobAction.REPLACE else None,
        JobState.PENDING, 0, clock.now, None, None, clock.now,
    )  # fmt: skip
    return store.queue_job(exam, job)


World = tuple[MemoryPublicationStore, MemoryBlobStore, FakeRegistry, Clock, Publisher]


def test_publish_marks_the_exam_published_with_the_entry_id(world: World) -> None:
    store, blobs, registry, _clock, publisher = world
    _queue(store, blobs, 1, JobAction.PUBLISH, _clock)
    assert publisher.run_once() == 1
    exam = store.get_exam("1.2.3")
    assert exam is not None
    assert exam.state is ExamState.PUBLISHED
    assert exam.registry_entry_id == "entry-1.2.3.9.1"
    assert registry.entries["entry-1.2.3.9.1"][0] == b"KOS v1"
    assert publisher.run_once() == 0  # nothing left: published exactly once
    assert registry.calls == 1


def test_replace_and_delete_run_in_order_and_use_the_current_entry(world: World) -> None:
    store, blobs, registry, clock, publisher = world
    _queue(store, blobs, 1, JobAction.PUBLISH, clock)
    _queue(store, blobs, 2, JobAction.REPLACE, clock)
    _queue(store, blobs, 2, JobAction.DELETE, clock)
    assert publisher.run_once() == 1  # only the head of the exam's queue is due
    assert publisher.run_once() == 1
    replaced = registry.entries["entry-1.2.3.9.2"][1]
    assert replaced.replaces == "entry-1.2.3.9.1"
    assert publisher.run_once() == 1
    assert registry.deleted == ["entry-1.2.3.9.2"]
    exam = store.get_exam("1.2.3")
    assert exam is not None
    assert exam.state is ExamState.DEPUBLISHED
    assert exam.registry_entry_id is None


def test_registry_down_backs_off_then_publishes_exactly_once(world: World) -> None:
    store, blobs, registry, clock, publisher = world
    _queue(store, blobs, 1, JobAction.PUBLISH, clock)
    registry.available = False
    delays = []
    for _ in range(6):
        assert publisher.run_once() == 0
        (job,) = store.jobs()
        delays.append((job.next_attempt_at - clock.now).total_seconds())
        assert publisher.run_once() == 0  # not due again before its time
        clock.now = job.next_attempt_at
    assert all(later > earlier * 0.9 for earlier, later in itertools.pairwise(delays))
    assert delays[-1] <= 60.0
    assert store.jobs()[0].last_error is not None
    registry.available = True
    assert publisher.run_once() == 1
    assert len(registry.entries) == 1
    assert store.jobs()[0].attempts == 7


def test_rejection_stops_retrying_and_keeps_the_reason(world: World) -> None:
    store, blobs, registry, clock, publisher = world
    _queue(store, blobs, 1, JobAction.PUBLISH, clock)
    registry.reject_with = "patient identifier: invalid INS check key"
    assert publisher.run_once() == 1
    exam = store.get_exam("1.2.3")
    assert exam is not None and exam.state is ExamState.REJECTED
    assert exam.reason is not None and "INS" in exam.reason
    (job,) = store.jobs()
    assert job.state is JobState.REJECTED
    clock.now += timedelta(days=1)
    assert publisher.run_once() == 0


def test_a_crash_after_publishing_republishes_the_same_entry(world: World) -> None:
    store, blobs, registry, clock, publisher = world
    job = _queue(store, blobs, 1, JobAction.PUBLISH, clock)
    # The registry got it, but the box died before recording it: the job is still pending.
    registry.publish(replace_submission(job), b"KOS v1")
    assert publisher.run_once() == 1
    assert len(registry.entries) == 1


def replace_submission(job: OutboxJob) -> ManifestSubmission:
    from drimbox.services.manifests import submission_from_dict

    assert job.submission is not None
    return replace(submission_from_dict(job.submission))


def test_backoff_is_capped_exponential_with_jitter() -> None:
    rng = random.Random(1)
    for attempts in range(1, 12):
        delay = backoff_delay(attempts, base=2.0, cap=100.0, rng=rng)
        ceiling = min(100.0, 2.0 * 2 ** (attempts - 1))
        assert ceiling / 2 <= delay <= ceiling


def test_the_fake_registry_satisfies_the_port() -> None:
    assert isinstance(FakeRegistry(), Registry)
