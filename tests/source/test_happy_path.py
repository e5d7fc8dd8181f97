"""A validated report sent over MLLP ends as a manifest in the registry whose RetrieveURLs serve,
over WADO-RS from the box, the very instances the site's PACS holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from drimbox.model import ExamState
from registry.models import EntryStatus
from tests.source._network import StandaloneRegistry
from tests.source._support import (
    ORG_ROOT,
    Site,
    ans_message,
    ans_study,
    exam_datasets,
    kos_series,
    read_kos,
    retrieve_series,
)
from tests.source.conftest import SiteFactory
from tests.unit.test_kos import dciodvfy

EXAM_C = ans_study(103)


def assert_published_and_retrievable(site: Site, study: str, tmp_path: Path) -> None:
    """One current entry for the study; its KOS is valid and every RetrieveURL serves the
    series' instances byte-identical to the PACS."""
    site.wait_state(study, ExamState.PUBLISHED)
    current = [
        e for e in site.entries((EntryStatus.CURRENT,)) if e.manifest.study_instance_uid == study
    ]
    assert len(current) == 1
    kos = site.retrieve_kos(current[0])
    dciodvfy(kos, tmp_path)
    document = read_kos(kos)
    assert document.sop_instance_uid == current[0].manifest.kos_sop_instance_uid
    assert document.sop_instance_uid.startswith(ORG_ROOT + ".")
    assert document.patient_id == "279035121518989"
    assert document.accession_numbers == ("ACN103",)
    assert document.study_instance_uid == study
    series = list(kos_series(document))
    assert len(series) == 2
    for evidence_study, series_uid, url, uids in series:
        assert evidence_study == study
        assert url == f"{site.dicomweb}/studies/{study}/series/{series_uid}"
        status, bodies = retrieve_series(url)
        assert status == 200
        assert bodies == site.orthanc_series(study, series_uid)
        assert len(uids) == len(bodies) == 3


@pytest.mark.integration
@pytest.mark.parametrize("registry", ["embedded", "standalone"])
def test_report_for_a_study_only_the_pacs_holds_is_fetched_and_published(
    site_factory: SiteFactory, tmp_path: Path, request: pytest.FixtureRequest, registry: str
) -> None:
    if registry == "standalone":
        standalone = StandaloneRegistry(tmp_path / "registry")
        standalone.start()
        request.addfinalizer(standalone.stop)
        site = site_factory(registry_url=standalone.url)
    else:
        site = site_factory()
    site.load(exam_datasets(EXAM_C, "ACN103"))
    assert site.box.index.statistics().instances == 0

    assert site.send(ans_message("CR_C-ORU")) == "AA"

    assert_published_and_retrievable(site, EXAM_C, tmp_path)
    assert site.box.index.statistics().instances == 6
    assert [e["outcome"] for e in site.audit("publication.pacs_retrieve")] == ["success"]


@pytest.mark.integration
def test_report_for_a_study_the_pacs_pushed_earlier_is_published(
    site_factory: SiteFactory, tmp_path: Path
) -> None:
    site = site_factory()
    site.push(site.load(exam_datasets(EXAM_C, "ACN103")))

    assert site.send(ans_message("CR_C-MDM")) == "AA"

    assert_published_and_retrievable(site, EXAM_C, tmp_path)
    assert site.audit("publication.pacs_retrieve") == []
