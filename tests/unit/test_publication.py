"""The publication service: vigilance, completeness, coherence, versions, cancel, IOCM refresh."""

from __future__ import annotations

import io
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from pydicom import dcmread

from drimbox.audit import MemoryAuditLog
from drimbox.dicom.kos import parse_kos
from drimbox.dicom.synthetic import SyntheticStudy, make_study
from drimbox.identity import INS_NIR_TEST_OID, PatientIdentity, StudyFacts, ins_check_key
from drimbox.index.memory import MemoryIndex
from drimbox.index.publications import MemoryPublicationStore
from drimbox.model import ExamState, JobAction, JobState
from drimbox.services.ingest import IngestService
from drimbox.services.manifest_builder import KosManifestBuilder
from drimbox.services.publication import NO_EXAM_DATE, PublicationService
from drimbox.services.reports import ReportAction, ReportNotice
from drimbox.storage.memory import MemoryBlobStore

STUDY = SyntheticStudy(
    seed="publication",
    patient_id="IPP123",
    patient_name="MARTIN^ALICE",
    series_count=2,
    instances_per_series=3,
    accession_number="ACC42",
)
MATRICULE = "2700102123456"
INS = MATRICULE + f"{ins_check_key(MATRICULE):02d}"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class World:
    def __init__(self) -> None:
        self.clock = Clock()
        self.index = MemoryIndex()
        self.blobs = MemoryBlobStore()
        self.store = MemoryPublicationStore()
        self.audit = MemoryAuditLog()
        self.woken = 0
        self.ingest = IngestService(
            self.blobs, self.index, self.audit, max_instance_bytes=1 << 30, clock=self.clock
        )
        self.service = PublicationService(
            index=self.index,
            blobs=self.blobs,
            store=self.store,
            audit=self.audit,
            build_manifest=KosManifestBuilder(
                public_base_url="https://box.example/dicom-web",
                organization_uid_root="1.2.250.1.999.1",
                institution_name="Test site",
                clock=self.clock,
            ),
            source_box_id="DRIMBOX",
            wake_publisher=self._wake,
            clock=self.clock,
        )

    def _wake(self) -> None:
        self.woken += 1

    def store_study(self, study: SyntheticStudy = STUDY) -> None:
        for dataset in make_study(study):
            dataset.PatientSex = "F"
            buffer = io.BytesIO()
            dataset.save_as(buffer, enforce_file_format=True)
            buffer.seek(0)
            self.ingest.store_part10(buffer, source="test")

    def settle(self) -> list[str]:
        """Let the study's quiet period pass and mark it stable, like the StabilityMonitor."""
        self.clock.now += timedelta(seconds=30)
        stable = []
        for study_uid in self.index.unstable_studies(self.clock.now):
            if self.index.mark_stable(study_uid):
                stable.append(study_uid)
                self.service.on_study_stable(study_uid)
        return stable


def notice(**changes: object) -> ReportNotice:
    base = ReportNotice(
        message_id="m1",
        action=ReportAction.PUBLISH,
        report_id="1.2.250.1.999.2.1",
        study_instance_uid=STUDY.study_instance_uid,
        facts=StudyFacts(
            study_instance_uids=(STUDY.study_instance_uid,),
            accession_numbers=("ACC42",),
            patient=PatientIdentity(
                ins=INS,
                ins_oid=INS_NIR_TEST_OID,
                qualified=True,
                ipp="IPP123",
                birth_name="MARTIN",
                first_given_name="ALICE",
                given_names=("ALICE",),
                birth_date="19700101",
                sex="F",
            ),
        ),
        accession_number="ACC42",
        placer_order_number="ORD1",
        exam_date="20240115",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture
def world() -> World:
    return World()


def test_a_report_for_a_held_stable_study_queues_version_1(world: World) -> None:
    world.store_study()
    world.settle()
    exam = world.service.handle_report(notice())
    assert exam.state is ExamState.QUEUED
    assert exam.version == 1
    (job,) = world.store.jobs()
    assert (job.action, job.state, job.version) == (JobAction.PUBLISH, JobState.PENDING, 1)
    assert world.woken == 1
    assert job.kos_blob_key is not None
    kos = parse_kos(b"".join(world.blobs.stream(job.kos_blob_key)))
    assert kos.sop_instance_uid == job.kos_sop_instance_uid
    assert len(kos.instances) == 6
    urls = {series.retrieve_url for _, series_list in kos.evidence for series in series_list}
    assert urls == {
        f"https://box.example/dicom-web/studies/{STUDY.study_instance_uid}/series/"
        f"{STUDY.series_instance_uid(n)}"
        for n in range(2)
    }
    assert job.submission is not None
    assert job.submission["patient_value"] == INS
    assert job.submission["modalities"] == ["CT"]
    assert job.submission["accession_number"] == "ACC42"


def test_the_same_message_twice_is_processed_once(world: World) -> None:
    world.store_study()
    world.settle()
    world.service.handle_report(notice())
    world.service.handle_report(notice())
    assert len(world.store.jobs()) == 1


@pytest.mark.parametrize(
    ("patient_changes", "reason"),
    [
        ({"qualified": False}, "not qualified"),
        ({"ins": MATRICULE + "00"}, "check key"),
        ({"ins": None}, "INS"),
    ],
)
def test_identity_problems_quarantine_with_the_reason(
    world: World, patient_changes: dict[str, object], reason: str
) -> None:
    world.store_study()
    world.settle()
    bad = notice()
    patient = replace(bad.facts.patient, **patient_changes)  # type: ignore[arg-type]
    exam = world.service.handle_report(replace(bad, facts=replace(bad.facts, patient=patient)))
    assert exam.state is ExamState.QUARANTINED
    assert exam.reason is not None and reason in exam.reason
    assert world.store.jobs() == []


def test_problems_found_by_the_protocol_adapter_quarantine(world: World) -> None:
    world.store_study()
    world.settle()
    exam = world.service.handle_report(notice(problems=("birth date differs between PID and CDA",)))
    assert exam.state is ExamState.QUARANTINED
    assert exam.reason == "birth date differs between PID and CDA"


def test_the_dmp_flag_forbids_publication(world: World) -> None:
    world.store_study()
    world.settle()
    exam = world.service.handle_report(notice(send_to_dmp=False))
    assert exam.state is ExamState.NOT_FOR_DMP
    assert world.store.jobs() == []


def test_report_before_images_waits_then_publishes_when_the_study_is_stable(world: World) -> None:
    exam = world.service.handle_report(notice())
    assert exam.state is ExamState.WAITING_FOR_IMAGES
    world.store_study()
    still = world.store.get_exam(STUDY.study_instance_uid)
    assert still is not None and still.state is ExamState.WAITING_FOR_IMAGES
    assert world.settle() == [STUDY.study_instance_uid]
    exam_after = world.store.get_exam(STUDY.study_instance_uid)
    assert exam_after is not None and exam_after.state is ExamState.QUEUED
    assert len(world.store.jobs()) == 1


def test_images_that_never_arrive_time_out(world: World) -> None:
    world.service.handle_report(notice())
    world.clock.now += timedelta(hours=2)
    assert world.service.expire_waiting() == [STUDY.study_instance_uid]
    exam = world.store.get_exam(STUDY.study_instance_uid)
    assert exam is not None and exam.state is ExamState.IMAGES_TIMED_OUT


def test_report_and_images_of_different_patients_are_quarantined(world: World) -> None:
    other = replace(STUDY, patient_id="IPP999", patient_name="DURAND^PAUL")
    world.store_study(other)
    world.settle()
    exam = world.service.handle_report(notice())
    assert exam.state is ExamState.QUARANTINED
    assert exam.reason is not None
    assert "IPP differs" in exam.reason or "birth name differs" in exam.reason
    assert "MARTIN" not in exam.reason and "DURAND" not in exam.reason


def test_report_and_images_with_different_accessions_are_quarantined(world: World) -> None:
    world.store_study()
    world.settle()
    exam = world.service.handle_report(notice(accession_number="OTHER",
        facts=replace(notice().facts, accession_numbers=("OTHER",))))  # fmt: skip
    assert exam.state is ExamState.QUARANTINED
    assert exam.reason is not None and "AccessionNumber" in exam.reason


def test_an_exam_with_no_date_is_quarantined_not_dated_by_guess(world: World) -> None:
    world.store_study(replace(STUDY, study_date=""))
    world.settle()
    exam = world.service.handle_report(notice(exam_date=None))
    assert exam.state is ExamState.QUARANTINED
    assert exam.reason == NO_EXAM_DATE
    assert world.store.jobs() == []


def test_the_report_dates_an_exam_whose_images_have_no_study_date(world: World) -> None:
    world.store_study(replace(STUDY, study_date=""))
    world.settle()
    exam = world.service.handle_report(notice(exam_date="20240116"))
    assert exam.state is ExamState.QUEUED
    (job,) = world.store.jobs()
    assert job.submission is not None and job.submission["period_start"] == "2024-01-16"


def test_an_amended_report_queues_a_replacement(world: World) -> None:
    world.store_study()
    world.settle()
    first = world.service.handle_report(notice())
    amended = world.service.handle_report(notice(message_id="m2", report_id="1.2.250.1.999.2.2"))
    assert amended.version == 2
    assert amended.kos_sop_instance_uid != first.kos_sop_instance_uid
    jobs = world.store.jobs()
    assert [job.action for job in jobs] == [JobAction.PUBLISH, JobAction.REPLACE]
    assert jobs[1].replaces == first.kos_sop_instance_uid


def test_cancel_before_publication_queues_nothing(world: World) -> None:
    exam = world.service.handle_report(notice(action=ReportAction.CANCEL))
    assert exam.state is ExamState.DEPUBLISHED
    assert world.store.jobs() == []


def test_cancel_after_publication_queues_a_delete(world: World) -> None:
    world.store_study()
    world.settle()
    world.service.handle_report(notice())
    exam = world.service.handle_report(notice(message_id="m2", action=ReportAction.CANCEL))
    assert exam.state is ExamState.QUEUED
    assert [job.action for job in world.store.jobs()] == [JobAction.PUBLISH, JobAction.DELETE]


def test_rejected_instances_rebuild_the_manifest_then_withdraw_it(world: World) -> None:
    world.store_study()
    world.settle()
    world.service.handle_report(notice())
    world.index.reject_instances([STUDY.sop_instance_uid(0, 0), STUDY.sop_instance_uid(0, 1)])
    world.settle()
    jobs = world.store.jobs()
    assert [job.action for job in jobs] == [JobAction.PUBLISH, JobAction.REPLACE]
    assert jobs[1].kos_blob_key is not None
    kos = parse_kos(b"".join(world.blobs.stream(jobs[1].kos_blob_key)))
    assert len(kos.instances) == 4
    remaining = [STUDY.sop_instance_uid(s, i) for s in range(2) for i in range(3)][2:]
    world.index.reject_instances(remaining)
    world.service.on_instances_rejected(STUDY.study_instance_uid)  # the RejectionHandler's call
    assert [job.action for job in world.store.jobs()][-1] is JobAction.DELETE


def test_late_images_after_publication_replace_the_manifest(world: World) -> None:
    world.store_study(replace(STUDY, series_count=1))
    world.settle()
    world.service.handle_report(notice())
    world.store_study()  # the second series arrives late
    world.settle()
    jobs = world.store.jobs()
    assert [job.action for job in jobs] == [JobAction.PUBLISH, JobAction.REPLACE]
    assert jobs[1].kos_blob_key is not None
    kos = dcmread(io.BytesIO(b"".join(world.blobs.stream(jobs[1].kos_blob_key))))
    assert len(kos.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence) == 2


def test_every_step_is_audited(world: World) -> None:
    world.store_study()
    world.settle()
    world.service.handle_report(notice())
    events = [event["event"] for event in world.audit.events]
    assert "publication.queued" in events


def test_reports_naming_no_study_are_quarantined_each_under_its_own_key(world: World) -> None:
    from drimbox.hl7.reports import NO_STUDY_PREFIX

    for number in (1, 2):
        no_study = notice(
            message_id=f"m-no-study-{number}",
            study_instance_uid=f"{NO_STUDY_PREFIX}{number}",
            facts=replace(notice().facts, study_instance_uids=()),
        )
        exam = world.service.handle_report(no_study)
        assert exam.state is ExamState.QUARANTINED
        assert exam.reason == "the report names no StudyInstanceUID"
    assert len(world.store.exams()) == 2
