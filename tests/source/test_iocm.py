"""IOCM after publication: a rejection note C-STOREd by the PACS hides the rejected instances
from DICOMweb and replaces the manifest; rejecting everything left withdraws it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from pydicom.dataset import Dataset

from drimbox.dicom.kos import (
    ManifestSeries,
    ReferencedInstance,
    RejectionReason,
    build_rejection_note,
)
from drimbox.identity import INS_NIR_TEST_OID, PatientIdentity
from drimbox.model import Exam, ExamState
from registry.models import EntryStatus
from tests.source._support import (
    ORG_ROOT,
    Site,
    ans_message,
    ans_study,
    exam_datasets,
    kos_series,
    read_kos,
    retrieve_series,
    wait_for,
)
from tests.source.conftest import SiteFactory
from tests.unit.test_kos import dciodvfy

EXAM_C = ans_study(103)
PATIENT = PatientIdentity(
    ins="279035121518989",
    ins_oid=INS_NIR_TEST_OID,
    qualified=True,
    ipp="IPP101",
    birth_name="PAT-TROIS",
    first_given_name="DOMINIQUE",
    birth_date="19790328",
    sex="F",
)


def reject(site: Site, rejected: list[Dataset]) -> None:
    """The PACS sends the box a rejection note (quality) of ``rejected``."""
    by_series: dict[str, list[ReferencedInstance]] = {}
    for ds in rejected:
        by_series.setdefault(str(ds.SeriesInstanceUID), []).append(
            ReferencedInstance(str(ds.SOPClassUID), str(ds.SOPInstanceUID))
        )
    note = build_rejection_note(
        RejectionReason.QUALITY,
        patient=PATIENT,
        study_instance_uid=EXAM_C,
        series=tuple(ManifestSeries(uid, "CT", tuple(refs)) for uid, refs in by_series.items()),
        organization_uid_root="1.2.250.1.999.7",  # the PACS's organisation
        content_datetime=datetime.now(UTC),
        accession_number="ACN103",
    )
    site.push([site.pacs.upload(note)])


def wait_version(site: Site, version: int, state: ExamState) -> Exam:
    def probe() -> Exam | None:
        exam = site.exam(EXAM_C)
        return exam if exam and exam.version == version and exam.state is state else None

    return wait_for(probe, 20, f"version {version} {state.value}")


def instance_status(site: Site, ds: Dataset) -> int:
    url = (
        f"{site.dicomweb}/studies/{EXAM_C}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    return httpx.get(url, headers={"Accept": accept}, timeout=10).status_code


def qido_instances(site: Site) -> set[str]:
    response = httpx.get(f"{site.dicomweb}/studies/{EXAM_C}/instances", timeout=10)
    if response.status_code == httpx.codes.NO_CONTENT:
        return set()
    response.raise_for_status()
    return {item["00080018"]["Value"][0] for item in response.json()}


@pytest.mark.integration
def test_rejection_note_hides_instances_and_replaces_then_withdraws_the_manifest(
    site_factory: SiteFactory, tmp_path: Path
) -> None:
    site = site_factory()
    images = exam_datasets(EXAM_C, "ACN103")
    site.push(site.load(images))
    assert site.send(ans_message("CR_C-ORU")) == "AA"
    first = site.wait_state(EXAM_C, ExamState.PUBLISHED)
    rejected, kept = images[:2], images[2:]

    reject(site, rejected)

    second = wait_version(site, 2, ExamState.PUBLISHED)
    for ds in rejected:
        assert instance_status(site, ds) == httpx.codes.NOT_FOUND
    for ds in kept:
        assert instance_status(site, ds) == httpx.codes.OK
    image_uids = {str(ds.SOPInstanceUID) for ds in images}
    assert qido_instances(site) & image_uids == {str(ds.SOPInstanceUID) for ds in kept}
    entries = {e.manifest.kos_sop_instance_uid: e for e in site.entries()}
    assert first.kos_sop_instance_uid and second.kos_sop_instance_uid
    old, new = entries[first.kos_sop_instance_uid], entries[second.kos_sop_instance_uid]
    assert (old.status, new.status) == (EntryStatus.SUPERSEDED, EntryStatus.CURRENT)
    kos = site.retrieve_kos(new)
    dciodvfy(kos, tmp_path)
    assert new.manifest.kos_sop_instance_uid.startswith(ORG_ROOT + ".")
    referenced: set[str] = set()
    for _, _, url, uids in kos_series(read_kos(kos)):
        status, bodies = retrieve_series(url)
        assert status == httpx.codes.OK
        assert len(bodies) == len(uids)
        referenced |= uids
    assert referenced == {str(ds.SOPInstanceUID) for ds in kept}

    reject(site, kept)

    site.wait_state(EXAM_C, ExamState.DEPUBLISHED)
    assert site.entries((EntryStatus.CURRENT,)) == []
    assert {e.status for e in site.entries()} == {
        EntryStatus.SUPERSEDED,
        EntryStatus.ENTERED_IN_ERROR,
    }
    assert qido_instances(site) & image_uids == set()


def listening_sockets(port: int) -> int:
    """How many sockets listen on ``port`` in this network namespace (/proc/net/tcp)."""
    listen = "0A"  # TCP_LISTEN in /proc/net/tcp
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == listen:
            count += 1
    return count


@pytest.mark.integration
def test_rejection_notes_received_by_any_dimse_process_are_applied(
    site_factory: SiteFactory,
) -> None:
    site = site_factory(dimse_processes=2)
    wait_for(lambda: listening_sockets(site.box.dimse_port) == 2, 30, "the receiver process")
    images = exam_datasets(EXAM_C, "ACN103")
    site.push(site.load(images))
    assert site.send(ans_message("CR_C-ORU")) == "AA"
    site.wait_state(EXAM_C, ExamState.PUBLISHED)
    rejected, kept = images[:-1], images[-1]

    for ds in rejected:  # one note, one association each: SO_REUSEPORT spreads them
        reject(site, [ds])

    def hidden() -> bool:
        return all(instance_status(site, ds) == httpx.codes.NOT_FOUND for ds in rejected)

    wait_for(hidden, 20, "every rejection to apply")
    assert instance_status(site, kept) == httpx.codes.OK

    def final_manifest() -> set[str] | None:
        current = site.entries((EntryStatus.CURRENT,))
        if len(current) != 1:
            return None
        kos = read_kos(site.retrieve_kos(current[0]))
        referenced = {instance.sop_instance_uid for _, _, instance in kos.instances}
        return referenced if referenced == {str(kept.SOPInstanceUID)} else None

    wait_for(final_manifest, 20, "a manifest of what is left")
    site.wait_state(EXAM_C, ExamState.PUBLISHED)
