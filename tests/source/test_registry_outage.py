"""The standalone registry is down while a report is processed: the outbox retries (visible in
``drimbox publications``) and the manifest is published exactly once when it is back."""

from __future__ import annotations

import time
from typing import Any

import pytest

from drimbox.model import ExamState, JobState
from registry.models import EntryStatus
from tests.source._support import (
    StandaloneRegistry,
    ans_message,
    ans_study,
    cli_json,
    exam_datasets,
    wait_for,
)
from tests.source.conftest import SiteFactory

EXAM_C = ans_study(103)


@pytest.mark.integration
def test_registry_down_then_back_publishes_exactly_once(
    site_factory: SiteFactory, standalone_registry: StandaloneRegistry
) -> None:
    site = site_factory(registry_url=standalone_registry.url)
    site.push(site.load(exam_datasets(EXAM_C, "ACN103")))
    standalone_registry.stop()

    assert site.send(ans_message("CR_C-ORU")) == "AA"

    def retried() -> dict[str, Any] | None:
        jobs = [j for j in site.box.publications.jobs() if j.study_instance_uid == EXAM_C]
        return {"jobs": jobs} if jobs and jobs[0].attempts >= 2 else None

    (job,) = wait_for(retried, 20, "the outbox to retry")["jobs"]
    assert job.state is JobState.PENDING
    assert job.last_error is not None and "registry unavailable" in job.last_error
    (row,) = cli_json(site.box.settings.data_dir, "publications")
    assert (row["state"], row["pending_jobs"], row["registry_entry_id"]) == ("queued", 1, None)
    assert cli_json(site.box.settings.data_dir, "status")["outbox_pending"] == 1

    time.sleep(1.0)  # a few more failed attempts while it is down
    standalone_registry.start()

    exam = site.wait_state(EXAM_C, ExamState.PUBLISHED)
    entries = site.entries()
    assert [(e.status, e.manifest.kos_sop_instance_uid) for e in entries] == [
        (EntryStatus.CURRENT, exam.kos_sop_instance_uid)
    ]
    assert entries[0].entry_id == exam.registry_entry_id
    (done,) = [j for j in site.box.publications.jobs() if j.study_instance_uid == EXAM_C]
    assert done.state is JobState.DONE and done.attempts >= 3
    (row,) = cli_json(site.box.settings.data_dir, "publications")
    assert (row["state"], row["pending_jobs"]) == ("published", 0)
