"""Identity vigilance on the ANS sample messages: which ones must be quarantined, and why."""

from __future__ import annotations

import dataclasses

import pytest

from drimbox.hl7.flags import ReportFlags
from drimbox.hl7.messages import ReportAction, parse_report_message
from drimbox.hl7.vigilance import report_problems
from tests.hl7.ans import hl7_path

BIRTH_PLACE = "birth place code differs between PID and CDA"
M_TRAITS = [
    "sex differs from the sex encoded in the INS",
    "birth year differs from the year encoded in the INS",
    "birth month differs from the month encoded in the INS",
]
COHERENT = [
    "CR_B-ORU",
    "CR_C-ORU",
    "CR_C-MDM",
    "CR_G2-ORU",  # coherent as a message: its dummy study only fails against the images
    "CR_I-ORU",
    "CR_I_Depublication-ORU",
    "CR_I_Depublication-MDM",
    "CR_J-ORU",
    "CR_K-ORU",
]
# DERIVATIVES.md: these derived CDAs carry another birthplace than PID-11 (the originals embed a
# CDA whose birthplace matches PID in most cases): a data artefact, reported as such
BIRTH_PLACE_ONLY = [
    "CR_A-ORU",
    "CR_D-ORU",
    "CR_E-ORU",
    "CR_F-ORU",
    "CR_G1-ORU",
    "CR_G1-MDM",
    "CR_G1_MAJ-ORU",
    "CR_H-ORU",
    "CR_I-MDM",
    "CR_L-ORU",
]


@pytest.mark.parametrize("name", COHERENT)
def test_coherent_sample_has_no_problem(name: str) -> None:
    assert report_problems(parse_report_message(hl7_path(name).read_bytes())) == []


@pytest.mark.parametrize("name", BIRTH_PLACE_ONLY)
def test_derived_sample_differs_only_by_birth_place(name: str) -> None:
    message = parse_report_message(hl7_path(name).read_bytes())
    assert report_problems(message) == [BIRTH_PLACE]
    assert report_problems(message, compare_birth_place=False) == []


def test_exam_m_is_quarantined_for_traits_contradicting_the_ins() -> None:
    message = parse_report_message(hl7_path("CR_M-ORU").read_bytes())
    assert report_problems(message, compare_birth_place=False) == M_TRAITS


def test_production_refuses_the_test_ins_of_every_sample() -> None:
    message = parse_report_message(hl7_path("CR_C-ORU").read_bytes())
    assert report_problems(message, allow_test_oids=False) == [
        "INS has a test/demonstration OID, refused in production"
    ]


def test_unqualified_identity_blocks_publication() -> None:
    raw = hl7_path("CR_C-ORU").read_bytes().replace(b"|N|VALI\r", b"|N|PROV\r")
    message = parse_report_message(raw)
    assert not message.patient.qualified
    assert report_problems(message) == [
        "identity is not qualified (PID-32 must be VALI with an INS)"
    ]


def test_foreign_ins_authority_is_reported_not_dropped() -> None:
    raw = hl7_path("CR_C-ORU").read_bytes().replace(b"&1.2.250.1.213.1.4.10&", b"&1.2.3.4&")
    message = parse_report_message(raw)
    assert (message.patient.ins, message.patient.ins_oid) == ("279035121518989", "1.2.3.4")
    assert "INS assigning authority OID is not an INS OID" in report_problems(message)


def test_report_not_destined_to_the_dmp_is_not_published_but_may_be_cancelled() -> None:
    raw = (
        hl7_path("CR_C-ORU")
        .read_bytes()
        .replace(
            b"DESTDMP^Destinataire DMP^MetaDMPMSS||Y", b"DESTDMP^Destinataire DMP^MetaDMPMSS||N"
        )
    )
    message = parse_report_message(raw)
    assert report_problems(message) == ["DESTDMP is not Y: the report is not to be shared"]
    cancel = dataclasses.replace(message, action=ReportAction.CANCEL)
    assert report_problems(cancel) == []
    silent = dataclasses.replace(message, flags=ReportFlags({}))
    assert report_problems(silent) == ["DESTDMP is not Y: the report is not to be shared"]


def test_txa_document_number_must_match_the_cda() -> None:
    raw = hl7_path("CR_C-MDM").read_bytes().replace(b"|1.2.250.1.213.4.5.4.403|", b"|1.2.3|")
    assert report_problems(parse_report_message(raw)) == [
        "TXA-12 unique document number differs from the CDA ClinicalDocument/id"
    ]
