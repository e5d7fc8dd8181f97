"""More of the lifecycle: resent reports, report before images, late images, images time-out."""

from __future__ import annotations

import pytest

from drimbox.model import Exam, ExamState
from registry.models import EntryStatus
from tests.source._support import ans_message, ans_study, exam_datasets, wait_for
from tests.source.conftest import SiteFactory

EXAM_C = ans_study(103)


@pytest.mark.integration
def test_same_report_resent_with_new_control_ids_is_published_once(
    site_factory: SiteFactory,
) -> None:
    site = site_factory()
    site.push(site.load(exam_datasets(EXAM_C, "ACN103")))
    first = ans_message("CR_C-ORU", {b"{{idMessage}}": b"MSG-0001"})
    assert site.send(first) == "AA"
    published = site.wait_state(EXAM_C, ExamState.PUBLISHED)

    assert site.send(first) == "AA"  # the very same bytes again
    assert site.send(ans_message("CR_C-ORU", {b"{{idMessage}}": b"MSG-0002"})) == "AA"
    assert site.send(ans_message("CR_C-MDM")) == "AA"  # same report, as MDM^T02

    pending = site.box.settings.data_dir / "hl7-inbox" / "pending"
    wait_for(lambda: not any(pending.iterdir()), 20, "the inbox to drain")
    exam = site.exam(EXAM_C)
    assert exam is not None
    assert (exam.version, exam.state) == (1, ExamState.PUBLISHED)
    assert exam.kos_sop_instance_uid == published.kos_sop_instance_uid
    assert [e.status for e in site.entries()] == [EntryStatus.CURRENT]


@pytest.mark.integration
def test_report_before_the_images_waits_then_publishes_when_they_arrive(
    site_factory: SiteFactory,
) -> None:
    site = site_factory()
    assert site.send(ans_message("CR_C-ORU")) == "AA"
    waiting = site.wait_state(EXAM_C, ExamState.WAITING_FOR_IMAGES)
    assert waiting.reason == "waiting for the study's images to be complete"
    assert [e["outcome"] for e in site.audit("publication.pacs_retrieve")] == ["not-found"]

    site.push(site.load(exam_datasets(EXAM_C, "ACN103")))  # the modality was late

    exam = site.wait_state(EXAM_C, ExamState.PUBLISHED)
    assert exam.version == 1
    assert [e.status for e in site.entries()] == [EntryStatus.CURRENT]


@pytest.mark.integration
def test_late_images_after_publication_replace_the_manifest(site_factory: SiteFactory) -> None:
    site = site_factory()
    images = exam_datasets(EXAM_C, "ACN103", series_count=3)
    first_series, late_series = images[:6], images[6:]
    site.push(site.load(first_series))
    assert site.send(ans_message("CR_C-ORU")) == "AA"
    first = site.wait_state(EXAM_C, ExamState.PUBLISHED)

    site.push(site.load(late_series))

    def replaced() -> Exam | None:
        exam = site.exam(EXAM_C)
        return exam if exam and exam.version == 2 and exam.state is ExamState.PUBLISHED else None

    second = wait_for(replaced, 20, "the manifest of the late images")
    statuses = {e.manifest.kos_sop_instance_uid: e.status for e in site.entries()}
    assert statuses == {
        first.kos_sop_instance_uid: EntryStatus.SUPERSEDED,
        second.kos_sop_instance_uid: EntryStatus.CURRENT,
    }


@pytest.mark.integration
def test_images_that_never_arrive_time_out_and_need_attention(site_factory: SiteFactory) -> None:
    site = site_factory(images_timeout_seconds=0.5)
    assert site.send(ans_message("CR_C-ORU")) == "AA"
    site.wait_state(EXAM_C, ExamState.WAITING_FOR_IMAGES)

    expired = wait_for(site.box.publication.expire_waiting, 10, "the time-out")

    assert expired == [EXAM_C]
    exam = site.wait_state(EXAM_C, ExamState.IMAGES_TIMED_OUT)
    assert exam.reason == "the study's images did not arrive in time"
    assert site.entries() == []
