"""Every ANS sample exam the box can act on, sent over MLLP to a box whose PACS holds images
matching it: published, quarantined (reason in ``drimbox status`` / ``drimbox publications``),
not for the DMP, replaced, de-published."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from drimbox.model import Exam, ExamState
from registry.models import EntryStatus
from tests.source._support import (
    EXAM_M_PATIENT,
    PatientTraits,
    Site,
    ans_message,
    ans_study,
    cli_json,
    exam_datasets,
    read_kos,
    wait_for,
    with_flag,
)
from tests.source.conftest import SiteFactory
from tests.unit.test_kos import dciodvfy

# exam -> (sample messages, [(study number, accession)]) of the exams published as sent
PUBLISHED = {
    "A": (["CR_A-ORU"], [(101, "ACN101")]),
    "B": (["CR_B-ORU"], [(102, "ACN102")]),
    "C": (["CR_C-ORU"], [(103, "ACN103")]),
    "D": (["CR_D-ORU"], [(104, "ACN104")]),
    "E": (["CR_E-ORU"], [(105, "ACN105")]),
    "F": (["CR_F-ORU"], [(106, "ACN106"), (107, "ACN107")]),  # one report, two studies
    "H": (["CR_H-ORU"], [(109, "ACN109")]),
    "J": (["CR_J-ORU"], [(111, "ACN111")]),
    "K": (["CR_K-ORU"], [(112, "ACN112")]),
    "L": (["CR_L-ORU"], [(113, "ACN113")]),
}
M_TRAITS = (
    "sex differs from the sex encoded in the INS; "
    "birth year differs from the year encoded in the INS; "
    "birth month differs from the month encoded in the INS"
)


def load_exam(site: Site, number: int, accession: str, **kwargs: Any) -> str:
    study = ans_study(number)
    site.load(exam_datasets(study, accession, **kwargs))
    return study


def attention(site: Site) -> dict[str, str]:
    status = cli_json(site.box.settings.data_dir, "status")
    return {item["study_instance_uid"]: item["reason"] for item in status["attention"]}


def publication_rows(site: Site) -> dict[str, dict[str, Any]]:
    rows = cli_json(site.box.settings.data_dir, "publications")
    return {row["study_instance_uid"]: row for row in rows}


@pytest.mark.integration
def test_every_publishable_sample_exam_is_published_once_with_a_valid_kos(
    site_factory: SiteFactory, tmp_path: Path
) -> None:
    site = site_factory()
    studies = [
        load_exam(site, number, accession)
        for _, exams in PUBLISHED.values()
        for number, accession in exams
    ]
    site.push([i for ids in site.loaded.values() for i in ids])  # the modality sent them
    site.wait_stable()

    for messages, _ in PUBLISHED.values():
        for name in messages:
            assert site.send(ans_message(name)) == "AA", name

    for study in studies:
        site.wait_state(study, ExamState.PUBLISHED, timeout=40)
    current = site.entries((EntryStatus.CURRENT,))
    assert sorted(e.manifest.study_instance_uid for e in current) == sorted(studies)
    assert len(site.entries()) == len(studies)  # nothing superseded, nothing withdrawn
    for entry in current:
        kos = site.retrieve_kos(entry)
        dciodvfy(kos, tmp_path)
        assert read_kos(kos).study_instance_uid == entry.manifest.study_instance_uid
    rows = publication_rows(site)
    assert {rows[s]["state"] for s in studies} == {"published"}
    assert attention(site) == {}


@pytest.mark.integration
def test_exams_that_must_not_be_published_are_held_with_their_reason(
    site_factory: SiteFactory,
) -> None:
    site = site_factory()
    exam_m = load_exam(site, 114, "ACN114", patient=EXAM_M_PATIENT)
    exam_e = load_exam(site, 105, "ACN105", patient=PatientTraits(birth_date="19790329"))
    exam_c = load_exam(site, 103, "ACN103")
    exam_h = load_exam(site, 109, "ACN109")
    load_exam(site, 108, "ACN108")  # the PACS holds ACN108 under exam G's StudyInstanceUID
    dummy_g2 = "1.2.3.4.5.6.7.8.9"
    expected = {
        # exam M: traits contradicting the INS (report-level identity vigilance)
        exam_m: ("quarantined", M_TRAITS),
        # exam E with images of another birth date (report-versus-images coherence)
        exam_e: ("quarantined", "birth date differs between report and images"),
        # exam C with an unqualified identity (PID-32 PROV)
        exam_c: ("quarantined", "identity is not qualified (PID-32 must be VALI with an INS)"),
        # exam G2: a dummy StudyInstanceUID whose accession is exam G's
        dummy_g2: (
            "quarantined",
            "StudyInstanceUID of the report does not match the images: the PACS holds the "
            "report's accession number under another StudyInstanceUID",
        ),
        # exam H not destined to the DMP
        exam_h: ("not-for-dmp", "the DMP flag forbids publication"),
    }
    messages = [
        ans_message("CR_M-ORU"),
        ans_message("CR_E-ORU"),
        ans_message("CR_C-ORU", {b"|N|VALI\r": b"|N|PROV\r"}),
        ans_message("CR_G2-ORU"),
        with_flag(ans_message("CR_H-ORU"), b"DESTDMP", b"N"),
    ]

    for message in messages:
        assert site.send(message) == "AA"

    for study, (state, reason) in expected.items():
        exam = site.wait_state(study, ExamState(state))
        assert exam.reason == reason, study
        assert exam.kos_sop_instance_uid is None
    assert attention(site) == {
        study: reason for study, (state, reason) in expected.items() if state == "quarantined"
    }
    rows = publication_rows(site)
    assert {s: (r["state"], r["reason"]) for s, r in rows.items()} == expected
    assert {r["registry_entry_id"] for r in rows.values()} == {None}
    assert site.box.index.locate(dummy_g2) == []  # nothing fetched for G2
    assert site.entries() == []
    assert site.box.publications.jobs() == []


@pytest.mark.integration
def test_amended_report_g1_maj_replaces_the_entry_of_g1(
    site_factory: SiteFactory, tmp_path: Path
) -> None:
    site = site_factory()
    study = load_exam(site, 108, "ACN108")
    assert site.send(ans_message("CR_G1-ORU")) == "AA"
    first = site.wait_state(study, ExamState.PUBLISHED)

    assert site.send(ans_message("CR_G1_MAJ-ORU")) == "AA"

    def replaced() -> Exam | None:
        exam = site.exam(study)
        return exam if exam and exam.version == 2 and exam.state is ExamState.PUBLISHED else None

    second = wait_for(replaced, 20, "version 2 to be published")
    entries = {e.manifest.kos_sop_instance_uid: e for e in site.entries()}
    assert len(entries) == 2
    assert first.kos_sop_instance_uid and second.kos_sop_instance_uid
    old, new = entries[first.kos_sop_instance_uid], entries[second.kos_sop_instance_uid]
    assert (old.status, new.status) == (EntryStatus.SUPERSEDED, EntryStatus.CURRENT)
    assert new.manifest.replaces == old.entry_id
    assert first.kos_sop_instance_uid != second.kos_sop_instance_uid
    dciodvfy(site.retrieve_kos(new), tmp_path)
    assert publication_rows(site)[study]["version"] == 2


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["ORU", "MDM"])
def test_cancelled_report_i_depublishes_the_entry(site_factory: SiteFactory, kind: str) -> None:
    site = site_factory()
    study = load_exam(site, 110, "ACN110")
    assert site.send(ans_message(f"CR_I-{kind}")) == "AA"
    published = site.wait_state(study, ExamState.PUBLISHED)

    assert site.send(ans_message(f"CR_I_Depublication-{kind}")) == "AA"

    site.wait_state(study, ExamState.DEPUBLISHED)
    (entry,) = site.entries()
    assert entry.manifest.kos_sop_instance_uid == published.kos_sop_instance_uid
    assert entry.status is EntryStatus.ENTERED_IN_ERROR
    assert site.entries((EntryStatus.CURRENT,)) == []
    assert publication_rows(site)[study]["state"] == "depublished"
