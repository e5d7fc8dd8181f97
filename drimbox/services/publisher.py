"""The outbox publisher: sends queued manifests to the national registry, exactly once.

Jobs of one exam run strictly in order (publish, then replace, then delete); different exams run
independently. A job is retried with exponential backoff and jitter while the registry is
unavailable, and stops at the first rejection (which needs a human: the reason is kept).
Exactly-once rests on two facts: the job is marked done only after the registry answered, and
the registry deduplicates by the KOS SOP Instance UID (its ``masterIdentifier``), so a crash
between the two merely republishes the same manifest, which returns the same entry.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from drimbox.errors import BlobNotFoundError, DrimboxError, StorageError
from drimbox.model import Exam, ExamState, JobAction, JobState, OutboxJob
from drimbox.ports import AuditLog, BlobStore, PublicationStore, Registry
from drimbox.services.manifests import submission_from_dict
from drimbox.services.worker import PollingWorker
from registry.errors import RegistryRejectedError, RegistryUnavailableError

__all__ = ["Publisher", "backoff_delay"]

_log = logging.getLogger("drimbox.publisher")


def backoff_delay(attempts: int, *, base: float, cap: float, rng: random.Random) -> float:
    """Seconds to wait before try ``attempts + 1``: capped exponential with "equal jitter".

    Parameters
    ----------
    attempts
        Failed tries so far (>= 1).
    base, cap
        First delay and the largest delay.
    rng
        Source of jitter.

    Returns
    -------
    float
        Between half and all of ``min(cap, base * 2 ** (attempts - 1))``.
    """
    ceiling = min(cap, base * 2.0 ** max(0, attempts - 1))
    return ceiling / 2 + rng.random() * ceiling / 2


class Publisher:
    """Drains the outbox into the registry.

    Parameters
    ----------
    store
        The publication store (exams + outbox).
    blobs
        Where the KOS bytes are.
    registry
        The national registry.
    audit
        The audit trail.
    clock
        Current UTC time (injected for tests).
    base_delay, max_delay
        Backoff bounds in seconds.
    poll_interval
        Seconds between outbox scans when idle.
    rng
        Jitter source.
    """

    def __init__(
        self,
        store: PublicationStore,
        blobs: BlobStore,
        registry: Registry,
        audit: AuditLog,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        base_delay: float = 1.0,
        max_delay: float = 300.0,
        poll_interval: float = 1.0,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._blobs = blobs
        self._registry = registry
        self._audit = audit
        self._clock = clock
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._rng = rng or random.Random()
        self._worker = PollingWorker(
            "drimbox-publisher", self.run_once, interval=poll_interval, recoverable=(DrimboxError,)
        )

    def wake(self) -> None:
        """Ask the worker to scan the outbox now (a job was queued)."""
        self._worker.wake()

    def run_once(self) -> int:
        """Process every job due now; return how many reached a final state."""
        finished = 0
        for job in self._store.due_jobs(self._clock()):
            if self._worker.stopping:
                break
            if self._process(job):
                finished += 1
        return finished

    def start(self) -> None:
        """Start the worker thread."""
        self._worker.start()

    def stop(self) -> None:
        """Stop the worker thread (waits for the job in progress)."""
        self._worker.stop()

    def _process(self, job: OutboxJob) -> bool:
        exam = self._store.get_exam(job.study_instance_uid)
        if exam is None:  # cannot happen: the exam is saved with the job
            _log.error("publisher.orphan_job job=%s", job.job_id)
            return False
        attempts = job.attempts + 1
        try:
            entry_id = self._send(job, exam)
        except RegistryUnavailableError as error:
            self._postpone(job, attempts, f"registry unavailable: {error}", error.retry_after)
            return False
        except (RegistryRejectedError, BlobNotFoundError) as error:
            self._reject(job, exam, attempts, str(error))
            return True
        except StorageError as error:
            self._postpone(job, attempts, f"storage unavailable: {error}")
            return False
        except Exception as error:  # e.g. a gateway answering HTML: retry, never kill the worker
            _log.exception("publisher.unexpected_error job=%s", job.job_id)
            self._postpone(job, attempts, f"unexpected error: {type(error).__name__}: {error}")
            return False
        self._complete(job, exam, attempts, entry_id)
        return True

    def _postpone(
        self, job: OutboxJob, attempts: int, reason: str, retry_after: float | None = None
    ) -> None:
        delay = backoff_delay(attempts, base=self._base_delay, cap=self._max_delay, rng=self._rng)
        if retry_after is not None:  # the registry said when: honour it (capped)
            delay = min(self._max_delay, max(delay, retry_after))
        self._store.postpone_job(
            replace(
                job,
                attempts=attempts,
                next_attempt_at=self._clock() + timedelta(seconds=delay),
                last_error=reason[:500],
            )
        )
        _log.info("publisher.retry job=%s attempt=%s delay=%.1fs", job.job_id, attempts, delay)

    def _send(self, job: OutboxJob, exam: Exam) -> str | None:
        if job.action is JobAction.DELETE:
            target = exam.registry_entry_id
            if target is None:  # never reached the registry: nothing to withdraw
                return None
            self._registry.delete(target)
            return target
        if job.kos_blob_key is None or job.submission is None:
            raise BlobNotFoundError(f"job {job.job_id} has no manifest")
        kos = b"".join(self._blobs.stream(job.kos_blob_key))
        submission = submission_from_dict(job.submission)
        if job.action is JobAction.REPLACE:
            previous = exam.registry_entry_id or job.replaces
            submission = replace(submission, replaces=previous)
        return self._registry.publish(submission, kos)

    def _complete(self, job: OutboxJob, exam: Exam, attempts: int, entry_id: str | None) -> None:
        done = replace(job, state=JobState.DONE, attempts=attempts, registry_entry_id=entry_id)
        now = self._clock()
        if job.action is JobAction.DELETE:
            settled = replace(exam, registry_entry_id=None, updated_at=now)
            if exam.version == job.version:
                settled = replace(settled, state=ExamState.DEPUBLISHED, reason=exam.reason)
        else:
            settled = replace(exam, registry_entry_id=entry_id, updated_at=now)
            if (
                exam.version == job.version
                and exam.state is ExamState.QUEUED
                and not self._has_later_job(job)  # e.g. a de-publication queued meanwhile
            ):
                settled = replace(settled, state=ExamState.PUBLISHED, reason=None)
        self._store.finish_job(done, settled)
        self._audit.record(
            f"registry.{job.action.value}",
            "success",
            study=job.study_instance_uid,
            kos=job.kos_sop_instance_uid,
            entry=entry_id,
            attempts=attempts,
        )
        _log.info(
            "publisher.done job=%s action=%s study=%s entry=%s",
            job.job_id,
            job.action.value,
            job.study_instance_uid,
            entry_id,
        )

    def _has_later_job(self, job: OutboxJob) -> bool:
        """Whether another job of the exam waits after ``job`` (the exam stays queued)."""
        return any(
            other.job_id > job.job_id and other.state is JobState.PENDING
            for other in self._store.jobs(job.study_instance_uid)
        )

    def _reject(self, job: OutboxJob, exam: Exam, attempts: int, reason: str) -> None:
        rejected = replace(job, state=JobState.REJECTED, attempts=attempts, last_error=reason)
        settled = replace(exam, updated_at=self._clock())
        if exam.version == job.version:
            settled = replace(settled, state=ExamState.REJECTED, reason=reason)
        self._store.finish_job(rejected, settled)
        self._audit.record(
            f"registry.{job.action.value}",
            "rejected",
            study=job.study_instance_uid,
            kos=job.kos_sop_instance_uid,
            reason=reason[:500],
        )
        _log.warning(
            "publisher.rejected job=%s study=%s reason=%s",
            job.job_id,
            job.study_instance_uid,
            reason[:200],
        )
