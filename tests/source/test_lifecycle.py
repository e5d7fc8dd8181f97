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
