"""The standalone registry is down while a report is processed: the outbox retries (visible in
``drimbox publications``) and the manifest is published exactly once when it is back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from drimbox.model import ExamState, JobState, OutboxJob
from registry.models import EntryStatus
from tests.source._network import Gateway, StandaloneRegistry
from tests.source._support import (
    ans_message,
    ans_study,
    cli_json,
    exam_datasets,
    registry_entries,
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

    standalone_registry.start()

    exam = site.wait_state(EXAM_C, ExamState.PUBLISHED)
    entries = site.entries()
    assert [(e.status, e.manifest.kos_sop_instance_uid) for e in entries] == [
        (EntryStatus.CURRENT, exam.kos_sop_instance_uid)
    ]
    assert entries[0].entry_id == exam.registry_entry_id
    (done,) = [j for j in site.box.publications.jobs() if j.study_instance_uid == EXAM_C]
    assert done.state is JobState.DONE and done.attempts >= 3  # two failures at least


@pytest.mark.integration
def test_amendment_and_cancellation_queued_while_the_registry_is_down_apply_in_order(
    site_factory: SiteFactory, standalone_registry: StandaloneRegistry
) -> None:
    site = site_factory(registry_url=standalone_registry.url)
    exam_g, exam_i = ans_study(108), ans_study(110)
    site.push(site.load(exam_datasets(exam_g, "ACN108") + exam_datasets(exam_i, "ACN110")))
    site.wait_stable()  # each report then publishes at once: four jobs in the outbox
    standalone_registry.stop()

    for name in ("CR_G1-ORU", "CR_G1_MAJ-ORU", "CR_I-ORU", "CR_I_Depublication-ORU"):
        assert site.send(ans_message(name)) == "AA"

    def retried() -> bool:
        jobs = site.box.publications.jobs()
        return len([j for j in jobs if j.attempts >= 1]) >= 2

    wait_for(retried, 20, "retries")
    standalone_registry.start()

    g = site.wait_state(exam_g, ExamState.PUBLISHED)
    cancelled = site.wait_state(exam_i, ExamState.DEPUBLISHED)
    assert cancelled.reason == "report cancelled"
    by_study: dict[str, list[tuple[str | None, EntryStatus]]] = {}
    for entry in site.entries():
        by_study.setdefault(entry.manifest.study_instance_uid, []).append(
            (entry.manifest.kos_sop_instance_uid, entry.status)
        )
    assert g.version == 2
    jobs = [
        (j.study_instance_uid, j.action.value, j.state.value) for j in site.box.publications.jobs()
    ]
    assert jobs == [
        (exam_g, "publish", "done"),
        (exam_g, "replace", "done"),
        (exam_i, "publish", "done"),
        (exam_i, "delete", "done"),
    ]
    assert sorted(status for _, status in by_study[exam_g]) == [
        EntryStatus.CURRENT,
        EntryStatus.SUPERSEDED,
    ]
    assert (g.kos_sop_instance_uid, EntryStatus.CURRENT) in by_study[exam_g]
    assert [status for _, status in by_study[exam_i]] == [EntryStatus.ENTERED_IN_ERROR]


@pytest.mark.integration
def test_registry_refusal_is_final_and_needs_attention(
    site_factory: SiteFactory, tmp_path: Path
) -> None:
    registry = StandaloneRegistry(tmp_path / "production-registry", production=True)
    registry.start()
    try:
        site = site_factory(registry_url=registry.url)
        site.push(site.load(exam_datasets(EXAM_C, "ACN103")))

        assert site.send(ans_message("CR_C-ORU")) == "AA"

        exam = site.wait_state(EXAM_C, ExamState.REJECTED)
        (job,) = site.box.publications.jobs()
        assert (job.state, job.attempts) == (JobState.REJECTED, 1)
        assert exam.reason == job.last_error
        attention = cli_json(site.box.settings.data_dir, "status")["attention"]
        assert attention == [{"study_instance_uid": EXAM_C, "reason": exam.reason}]
        assert [r["outcome"] for r in site.audit("registry.publish")] == ["rejected"]
    finally:
        registry.stop()


@pytest.mark.integration
def test_gateway_answering_html_is_retried_then_published_once(
    site_factory: SiteFactory, standalone_registry: StandaloneRegistry
) -> None:
    gateway = Gateway(standalone_registry.url.removesuffix("/registry"))
    try:
        gateway.broken.set()
        site = site_factory(registry_url=gateway.url)
        site.push(site.load(exam_datasets(EXAM_C, "ACN103")))
        assert site.send(ans_message("CR_C-ORU")) == "AA"

        def retried() -> OutboxJob | None:
            jobs = site.box.publications.jobs()
            return jobs[0] if jobs and jobs[0].attempts >= 2 else None

        job = wait_for(retried, 20, "the outbox to retry")
        assert job.state is JobState.PENDING
        assert job.last_error is not None and job.last_error.startswith("unexpected error")
        gateway.broken.clear()

        exam = site.wait_state(EXAM_C, ExamState.PUBLISHED)
        (entry,) = registry_entries(standalone_registry.url)
        assert (entry.entry_id, entry.status) == (exam.registry_entry_id, EntryStatus.CURRENT)
    finally:
        gateway.close()
