"""Source workflow: a validated report becomes a manifest queued for the national registry, and
stays true afterwards (amended report, IOCM rejection, cancelled report).

The steps for one report (each audited, each idempotent):

1. identity vigilance: a qualified INS is required (:func:`drimbox.identity.publication_problems`)
   and the DMP flag must allow publication; otherwise the exam is quarantined / not published;
2. completeness: the study must be held and stable; if it is not held, the site's PACS is asked
   to send it (C-FIND + C-MOVE) and the exam waits for stability, up to a time-out;
3. coherence: the report and the images must agree (StudyInstanceUID, accession, patient traits);
   any mismatch quarantines the exam with the reason, and so does an exam with no date
   (neither the images' Study Date nor the report give one: a registry entry is never dated
   by guess);
4. a KOS manifest (next version, deterministic UIDs) is built from every non-rejected instance,
   written durably to the blob store, and queued in the outbox in the same transaction as the
   exam's new state; the :class:`~drimbox.services.publisher.Publisher` sends it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any, Protocol

from drimbox.dicom.uids import is_valid_uid
from drimbox.errors import DrimboxError, PacsError
from drimbox.identity import publication_problems, study_mismatches
from drimbox.model import (
    Exam,
    ExamState,
    InstanceLocation,
    JobAction,
    Level,
    Query,
)
from drimbox.ports import AuditLog, BlobStore, Index, Pacs, PublicationStore
from drimbox.services._exams import digest, image_facts, pending_job, values
from drimbox.services.manifests import build_submission, exam_date, submission_to_dict
from drimbox.services.reports import ReportAction, ReportNotice, notice_from_dict, notice_to_dict

__all__ = [
    "INVALID_STUDY_UID",
    "NO_EXAM_DATE",
    "ManifestBuilder",
    "ManifestDraft",
    "PublicationService",
]

_log = logging.getLogger("drimbox.publication")

KEY_OBJECT_SELECTION_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.88.59"
"""Key Object Selection Document Storage (PS3.4 Annex B.5): manifests are never referenced."""


@dataclass(frozen=True, slots=True)
class ManifestDraft:
    """What the KOS builder needs for one manifest version.

    Attributes
    ----------
    notice
        The report.
    version
        Manifest version (1 for the first publication).
    instances
        The instances to reference (never rejected ones, never manifests).
    study_attributes
        Study-level attributes of the images (DICOM JSON of the study match).
    series_modalities
        Modality of each referenced series, by SeriesInstanceUID.
    """

    notice: ReportNotice
    version: int
    instances: tuple[InstanceLocation, ...]
    study_attributes: dict[str, Any] = field(default_factory=dict)
    series_modalities: dict[str, str] = field(default_factory=dict)


INVALID_STUDY_UID = "the report's StudyInstanceUID is not a valid DICOM UID (PS3.5 §9.1)"
NO_EXAM_DATE = (
    "no exam date: neither the images' Study Date (0008,0020) nor the report give a valid one"
)

_ACCESSION_OF_ANOTHER_STUDY = (
    "StudyInstanceUID of the report does not match the images: the PACS holds the report's "
    "accession number under another StudyInstanceUID"
)


class _Fetched(Enum):
    """What asking the PACS for a study that is not held gave."""

    WAIT = "wait"
    """Retrieved (the images arrive), not found, or the PACS failed: wait for the images."""
    OTHER_STUDY = "other-study"
    """Not found by StudyInstanceUID, but the accession number is another study's."""


class ManifestBuilder(Protocol):
    """Builds the KOS manifest bytes (Part 10) of a draft; returns (SOP Instance UID, bytes)."""

    def __call__(self, draft: ManifestDraft) -> tuple[str, bytes]:
        """Build the manifest."""
        ...


class PublicationService:
    """Turns report notices and IOCM rejections into queued registry operations.

    Parameters
    ----------
    index, blobs, store, audit
        Ports.
    build_manifest
        The KOS builder.
    source_box_id
        This box's identifier in the registry.
    wake_publisher
        Called after a job is queued.
    pacs
        The site's PACS, to fetch studies that are not held (optional).
    production
        Refuse test INS OIDs.
    images_timeout
        How long an exam may wait for its images.
    clock
        Current UTC time.
    """

    def __init__(
        self,
        *,
        index: Index,
        blobs: BlobStore,
        store: PublicationStore,
        audit: AuditLog,
        build_manifest: ManifestBuilder,
        source_box_id: str,
        wake_publisher: Callable[[], None] = lambda: None,
        pacs: Pacs | None = None,
        production: bool = False,
        images_timeout: timedelta = timedelta(hours=1),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._index = index
        self._blobs = blobs
        self._store = store
        self._audit = audit
        self._build_manifest = build_manifest
        self._source_box_id = source_box_id
        self._wake_publisher = wake_publisher
        self._pacs = pacs
        self._production = production
        self._images_timeout = images_timeout
        self._clock = clock
        self._lock = threading.RLock()  # one exam transition at a time in this process

    # ------------------------------------------------------------------ reports
    def handle_report(self, notice: ReportNotice) -> Exam:
        """Process one report notice; return the exam's new state."""
        with self._lock:
            exam = self._store.get_exam(notice.study_instance_uid)
            if exam is not None and exam.report.get("message_id") == notice.message_id:
                return exam  # the same message again: already processed
            if exam is not None and self._already_queued(notice, exam):
                return exam  # the same report in another envelope (new MSH-10, MDM vs ORU)
            if notice.action is ReportAction.CANCEL:
                return self._cancel(notice, exam)
            return self._publish(notice, exam, fetch=True)

    def _already_queued(self, notice: ReportNotice, exam: Exam) -> bool:
        """Whether ``exam``'s manifest already publishes this very report over the same images."""
        if exam.state not in (ExamState.QUEUED, ExamState.PUBLISHED):
            return False
        if exam.kos_sop_instance_uid is None or notice.action is ReportAction.CANCEL:
            return False
        held = notice_from_dict(exam.report)  # JSON-normalised, as tuples
        if replace(held, message_id="") != replace(notice, message_id=""):
            return False
        if digest(self._referenceable(notice.study_instance_uid)) != exam.referenced_digest:
            return False
        self._audit.record(
            "publication.report", "duplicate", study=notice.study_instance_uid,
            kos=exam.kos_sop_instance_uid,
        )  # fmt: skip
        return True

    def _publish(self, notice: ReportNotice, exam: Exam | None, *, fetch: bool) -> Exam:
        report = notice_to_dict(notice)
        problems = list(notice.problems)
        problems += [
            problem
            for problem in publication_problems(
                notice.patient, allow_test_oids=not self._production
            )
            if problem not in problems
        ]
        if not notice.study_instance_uid or not notice.facts.study_instance_uids:
            if not any("StudyInstanceUID" in problem for problem in problems):
                problems.append("the report names no StudyInstanceUID")
        elif not is_valid_uid(notice.study_instance_uid):
            problems.append(INVALID_STUDY_UID)
        if problems:
            return self._settle(notice, exam, report, ExamState.QUARANTINED, "; ".join(problems))
        if not notice.send_to_dmp:
            return self._settle(
                notice, exam, report, ExamState.NOT_FOR_DMP, "the DMP flag forbids publication"
            )
        instances = self._referenceable(notice.study_instance_uid)
        if not instances or not self._is_stable(notice.study_instance_uid):
            if not instances and fetch and self._fetch_from_pacs(notice) is _Fetched.OTHER_STUDY:
                return self._settle(
                    notice, exam, report, ExamState.QUARANTINED, _ACCESSION_OF_ANOTHER_STUDY
                )
            return self._settle(
                notice, exam, report, ExamState.WAITING_FOR_IMAGES,
                "waiting for the study's images to be complete",
            )  # fmt: skip
        study = self._study_attributes(notice.study_instance_uid)
        mismatches = study_mismatches(notice.facts, image_facts(notice.study_instance_uid, study))
        if mismatches:
            return self._settle(notice, exam, report, ExamState.QUARANTINED, "; ".join(mismatches))
        if exam_date(next(iter(values(study, "00080020")), None), notice) is None:
            return self._settle(notice, exam, report, ExamState.QUARANTINED, NO_EXAM_DATE)
        return self._queue_manifest(notice, exam, report, instances, study)

    def _queue_manifest(
        self,
        notice: ReportNotice,
        exam: Exam | None,
        report: dict[str, Any],
        instances: list[InstanceLocation],
        study: dict[str, Any],
    ) -> Exam:
        version = (exam.version if exam else 0) + 1
        draft = ManifestDraft(
            notice, version, tuple(instances), study, self._series_modalities(notice)
        )
        kos_uid, kos_bytes = self._build_manifest(draft)
        blob = self._blobs.put([kos_bytes])
        modalities = tuple(values(study, "00080061"))
        study_date = next(iter(values(study, "00080020")), None)
        submission = build_submission(
            notice,
            kos_sop_instance_uid=kos_uid,
            modalities=modalities,
            study_date=study_date,
            source_box_id=self._source_box_id,
        )
        previous_kos = exam.kos_sop_instance_uid if exam else None
        has_entry = exam is not None and (
            exam.registry_entry_id is not None or exam.state is ExamState.QUEUED
        )
        action = JobAction.REPLACE if has_entry and previous_kos else JobAction.PUBLISH
        now = self._clock()
        new_exam = Exam(
            study_instance_uid=notice.study_instance_uid,
            state=ExamState.QUEUED,
            reason=None,
            version=version,
            report=report,
            kos_sop_instance_uid=kos_uid,
            registry_entry_id=exam.registry_entry_id if exam else None,
            updated_at=now,
            referenced_digest=digest(instances),
        )
        job = pending_job(
            notice.study_instance_uid, action, version, kos_uid, now,
            kos_blob_key=blob.key,
            submission=submission_to_dict(submission),
            replaces=previous_kos if action is JobAction.REPLACE else None,
        )  # fmt: skip
        queued = self._store.queue_job(new_exam, job)
        self._audit.record(
            "publication.queued", "success", study=notice.study_instance_uid,
            kos=kos_uid, version=version, action=action.value, job=queued.job_id,
            instances=len(instances),
        )  # fmt: skip
        _log.info(
            "publication.queued study=%s version=%s action=%s",
            notice.study_instance_uid, version, action.value,
        )  # fmt: skip
        self._wake_publisher()
        return new_exam

    def _cancel(self, notice: ReportNotice, exam: Exam | None) -> Exam:
        report = notice_to_dict(notice)
        if exam is None or exam.kos_sop_instance_uid is None:
            return self._settle(
                notice, exam, report, ExamState.DEPUBLISHED, "report cancelled before publication"
            )
        return self._queue_delete(exam, report, "report cancelled")

    def _queue_delete(self, exam: Exam, report: dict[str, Any], reason: str) -> Exam:
        now = self._clock()
        new_exam = replace(
            exam, state=ExamState.QUEUED, reason=reason, report=report, updated_at=now
        )
        job = pending_job(
            exam.study_instance_uid, JobAction.DELETE, exam.version, exam.kos_sop_instance_uid,
            now, replaces=exam.kos_sop_instance_uid,
        )  # fmt: skip
        queued = self._store.queue_job(new_exam, job)
        self._audit.record(
            "publication.depublish_queued", "success", study=exam.study_instance_uid,
            kos=exam.kos_sop_instance_uid, reason=reason, job=queued.job_id,
        )  # fmt: skip
        self._wake_publisher()
        return new_exam

    def _settle(
        self,
        notice: ReportNotice,
        exam: Exam | None,
        report: dict[str, Any],
        state: ExamState,
        reason: str,
    ) -> Exam:
        settled = Exam(
            study_instance_uid=notice.study_instance_uid,
            state=state,
            reason=reason,
            version=exam.version if exam else 0,
            report=report,
            kos_sop_instance_uid=exam.kos_sop_instance_uid if exam else None,
            registry_entry_id=exam.registry_entry_id if exam else None,
            updated_at=self._clock(),
            referenced_digest=exam.referenced_digest if exam else None,
        )
        self._store.save_exam(settled)
        outcome = "waiting" if state is ExamState.WAITING_FOR_IMAGES else state.value
        self._audit.record(
            "publication.report", outcome, study=notice.study_instance_uid, reason=reason
        )
        _log.info(
            "publication.%s study=%s reason=%s", state.value, notice.study_instance_uid, reason
        )
        return settled

    # ------------------------------------------------------------------ images
    def on_study_stable(self, study_instance_uid: str) -> None:
        """StabilityMonitor subscriber: continue a waiting exam, or refresh a published one
        whose instances changed (late images, IOCM rejection)."""
        with self._lock:
            exam = self._store.get_exam(study_instance_uid)
            if exam is None:
                return
            if exam.state in (ExamState.WAITING_FOR_IMAGES, ExamState.IMAGES_TIMED_OUT):
                self._publish(notice_from_dict(exam.report), exam, fetch=False)
            else:
                self._refresh(exam)

    def expire_waiting(self) -> list[str]:
        """Mark exams that waited longer than the time-out; return their StudyInstanceUIDs."""
        expired = []
        with self._lock:
            deadline = self._clock() - self._images_timeout
            for exam in self._store.exams():
                if exam.state is ExamState.WAITING_FOR_IMAGES and exam.updated_at < deadline:
                    self._store.save_exam(
                        replace(
                            exam,
                            state=ExamState.IMAGES_TIMED_OUT,
                            reason="the study's images did not arrive in time",
                            updated_at=self._clock(),
                        )
                    )
                    self._audit.record(
                        "publication.images_timed_out", "failure", study=exam.study_instance_uid
                    )
                    expired.append(exam.study_instance_uid)
        return expired

    def on_instances_rejected(self, study_instance_uid: str) -> Exam | None:
        """Rebuild (or withdraw) the manifest after IOCM rejected some of the study's instances."""
        with self._lock:
            exam = self._store.get_exam(study_instance_uid)
            return None if exam is None else self._refresh(exam)

    def _refresh(self, exam: Exam) -> Exam:
        """Replace the manifest if the study's instances changed since it was built."""
        if exam.kos_sop_instance_uid is None or exam.state not in (
            ExamState.QUEUED,
            ExamState.PUBLISHED,
        ):
            return exam
        instances = self._referenceable(exam.study_instance_uid)
        if digest(instances) == exam.referenced_digest:
            return exam
        if not instances:
            return self._queue_delete(exam, exam.report, "every image was rejected (IOCM)")
        notice = notice_from_dict(exam.report)
        study = self._study_attributes(exam.study_instance_uid)
        return self._queue_manifest(notice, exam, exam.report, instances, study)

    def _referenceable(self, study_instance_uid: str) -> list[InstanceLocation]:
        return [
            location
            for location in self._index.locate(study_instance_uid)
            if location.sop_class_uid != KEY_OBJECT_SELECTION_SOP_CLASS
        ]

    def _is_stable(self, study_instance_uid: str) -> bool:
        return study_instance_uid not in self._index.unstable_studies(self._clock())

    def _study_attributes(self, study_instance_uid: str) -> dict[str, Any]:
        result = self._index.search(
            Query(
                level=Level.STUDY,
                filters={"StudyInstanceUID": study_instance_uid},
                include=frozenset({"all"}),
            )
        )
        return result.matches[0] if result.matches else {}

    def _series_modalities(self, notice: ReportNotice) -> dict[str, str]:
        result = self._index.search(
            Query(level=Level.SERIES, filters={"StudyInstanceUID": notice.study_instance_uid})
        )
        modalities = {}
        for series in result.matches:
            uid = next(iter(values(series, "0020000E")), None)
            modality = next(iter(values(series, "00080060")), None)
            if uid and modality:
                modalities[uid] = modality
        return modalities

    def _fetch_from_pacs(self, notice: ReportNotice) -> _Fetched:
        """Ask the PACS for the study; say whether it holds the accession under another UID."""
        if self._pacs is None:
            return _Fetched.WAIT
        try:
            found = self._pacs.find_studies(
                study_instance_uid=notice.study_instance_uid,
                accession_number=notice.accession_number,
            )
            if notice.study_instance_uid in found:
                moved = self._pacs.retrieve_study(notice.study_instance_uid)
                self._audit.record(
                    "publication.pacs_retrieve", "success",
                    study=notice.study_instance_uid, instances=moved,
                )  # fmt: skip
            else:
                self._audit.record(
                    "publication.pacs_retrieve", "not-found", study=notice.study_instance_uid
                )
                # found by accession only: the report names another study than its accession's
                return _Fetched.OTHER_STUDY if found else _Fetched.WAIT
        except (PacsError, DrimboxError) as error:
            self._audit.record(
                "publication.pacs_retrieve", "failure",
                study=notice.study_instance_uid, reason=str(error),
            )  # fmt: skip
            _log.warning(
                "publication.pacs_failed study=%s error=%s", notice.study_instance_uid, error
            )
        return _Fetched.WAIT
