"""IOCM after publication: a rejection note C-STOREd by the PACS hides the rejected instances
from DICOMweb and replaces the manifest; rejecting everything left withdraws it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.association import Association

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
    BOX_AET,
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
_ACCEPT_SECONDS = 0.5
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


def _served_by_main_process(site: Site, association: Association) -> bool:
    local = association.dul.socket.socket.getsockname()  # type: ignore[union-attr]
    dimse = site.box.dimse
    assert dimse is not None
    deadline = time.monotonic() + _ACCEPT_SECONDS
    while time.monotonic() < deadline:
        if any(sock.getpeername() == local for sock in dimse.active_sockets()):
            return True
        time.sleep(0.01)
    return False


@contextmanager
def main_process_busy(site: Site) -> Iterator[None]:
    """Hold an association served by the box's main process, so that the receiver process,
    idle, takes the next ones (:data:`drimbox.dimse.scp.ACCEPT_DEFER_SECONDS`)."""
    held: list[Association] = []
    try:
        for _ in range(8):
            ae = AE(ae_title=site.pacs.aet)  # an allowed peer
            ae.add_requested_context("1.2.840.10008.1.1")
            association = ae.associate("127.0.0.1", site.box.dimse_port, ae_title=BOX_AET)
            assert association.is_established
            held.append(association)
            if _served_by_main_process(site, association):
                for other in held[:-1]:  # served by the receiver process: free it again
                    other.release()
                held = held[-1:]
                break
        else:
            raise AssertionError("the main process never took an association")
        yield
    finally:
        for association in held:
            association.release()


@pytest.mark.integration
def test_rejection_notes_received_by_any_dimse_process_are_applied(
    site_factory: SiteFactory,
) -> None:
    site = site_factory(dimse_processes=2)  # start() returns once the receiver accepts
    images = exam_datasets(EXAM_C, "ACN103")
    site.push(site.load(images))
    assert site.send(ans_message("CR_C-ORU")) == "AA"
    site.wait_state(EXAM_C, ExamState.PUBLISHED)
    rejected, kept = images[:-1], images[-1]

    reject(site, [rejected[0]])  # received by whichever process is idle
    with main_process_busy(site):  # the others: by the receiver process
        for ds in rejected[1:]:
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
