"""The publication store in memory (tests; same semantics as the SQL store)."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import datetime

from drimbox.model import Exam, JobState, OutboxJob

__all__ = ["MemoryPublicationStore"]


class MemoryPublicationStore:
    """Exams and outbox jobs in dictionaries, behind one lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._exams: dict[str, Exam] = {}
        self._jobs: dict[int, OutboxJob] = {}
        self._next_id = 1

    def get_exam(self, study_instance_uid: str) -> Exam | None:
        """Return the exam, or ``None``."""
        with self._lock:
            return self._exams.get(study_instance_uid)

    def save_exam(self, exam: Exam) -> None:
        """Insert or update an exam."""
        with self._lock:
            self._exams[exam.study_instance_uid] = exam

    def queue_job(self, exam: Exam, job: OutboxJob) -> OutboxJob:
        """Save the exam and append the job, atomically."""
        with self._lock:
            queued = replace(job, job_id=self._next_id)
            self._next_id += 1
            self._exams[exam.study_instance_uid] = exam
            self._jobs[queued.job_id] = queued
            return queued

    def due_jobs(self, now: datetime, limit: int = 50) -> list[OutboxJob]:
        """The oldest pending job of each exam, if due at ``now``."""
        with self._lock:
            heads: dict[str, OutboxJob] = {}
            for job in sorted(self._jobs.values(), key=lambda j: j.job_id):
                if job.state is JobState.PENDING and job.study_instance_uid not in heads:
                    heads[job.study_instance_uid] = job
            due = [job for job in heads.values() if job.next_attempt_at <= now]
            return sorted(due, key=lambda j: j.job_id)[:limit]

    def finish_job(self, job: OutboxJob, exam: Exam) -> None:
        """Record the job's final state and the exam's new state."""
        with self._lock:
            self._jobs[job.job_id] = job
            self._exams[exam.study_instance_uid] = exam

    def postpone_job(self, job: OutboxJob) -> None:
        """Record a failed attempt."""
        with self._lock:
            self._jobs[job.job_id] = job

    def jobs(self, study_instance_uid: str | None = None) -> list[OutboxJob]:
        """Every job (of one exam), oldest first."""
        with self._lock:
            return [
                job
                for job in sorted(self._jobs.values(), key=lambda j: j.job_id)
                if study_instance_uid is None or job.study_instance_uid == study_instance_uid
            ]

    def exams(self) -> list[Exam]:
        """Every exam, most recently updated first."""
        with self._lock:
            return sorted(
                self._exams.values(),
                key=lambda e: (-e.updated_at.timestamp(), e.study_instance_uid),
            )

    def close(self) -> None:
        """Nothing to release."""
