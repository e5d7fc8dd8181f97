"""CDA R2 report header parsing against every ANS sample report, and hostile XML."""

from __future__ import annotations

import pytest

from drimbox.hl7.cda import InstanceIdentifier, parse_clinical_document
from drimbox.hl7.errors import InvalidDocumentError
from drimbox.identity import INS_NIR_TEST_OID
from tests.hl7.ans import CDA, cda_path

REPORTS = sorted(p.stem for p in CDA.rglob("CR_*.xml"))
SITE = "1.2.250.1.213.4.5.2.5"  # accession roots found in the samples
RIS = "1.2.250.1.925.994044785528.27"
MAJ = "1.2.250.1.925.994044.27"
# (modality, anatomic region, CCAM, LOINC) of each kind of exam
CT = ("CT", "774007", "ACQH004", "24727-0")
MR = ("RM", "61685007", "NZQN001", "24802-1")
NM = ("NM", "774007", "KCQL003", "25007-6")
XA = ("XA", "113257007", "DDQH006", "37174-0")
# (document id suffix, study suffixes, accession, accession root, codes, CDA birth place),
# read from each file; CR_G2 names the dummy study 1.2.3.4.5.6.7.8.9
EXPECTED = {
    "CR_A": ("401", ("101",), "ACN101", SITE, CT, "63220"),
    "CR_B": ("402", ("102",), "ACN102", SITE, MR, "63220"),
    "CR_C": ("403", ("103",), "ACN103", RIS, CT, "51215"),
    "CR_D": ("404", ("104",), "ACN104", SITE, MR, "63220"),
    "CR_E": ("405", ("105",), "ACN105", SITE, NM, "63220"),
    "CR_F": ("406", ("106", "107"), "ACN106", RIS, MR, "51215"),
    "CR_G1": ("407", ("108",), "ACN108", SITE, XA, "63220"),
    "CR_G1_MAJ": ("4072", ("108",), "ACN108", MAJ, XA, "51215"),
    "CR_G2": ("408", (), "ACN108", RIS, XA, "51215"),
    "CR_H": ("409", ("109",), "ACN109", SITE, CT, "63220"),
    "CR_I": ("410", ("110",), "ACN110", SITE, NM, "63220"),
    "CR_J": ("411", ("111",), "ACN111", SITE, CT, "63220"),
    "CR_K": ("412", ("112",), "ACN112", SITE, CT, "63220"),
    "CR_L": ("413", ("113",), "ACN113", RIS, CT, "51215"),
    "CR_M": ("414", ("114",), "ACN114", SITE, NM, "63220"),
}


def test_every_sample_report_is_covered() -> None:
    assert sorted(EXPECTED) == REPORTS


@pytest.mark.parametrize("name", REPORTS)
def test_ans_report_header_parses_to_its_values(name: str) -> None:
    doc_id, studies, accession, accession_root, codes, birth_place = EXPECTED[name]
    modality, region, ccam, loinc = codes
    document = parse_clinical_document(cda_path(name).read_bytes())

    assert document.document_id == InstanceIdentifier(f"1.2.250.1.213.4.5.4.{doc_id}")
    assert document.set_id == InstanceIdentifier("D52DE737-001D-4031-B571-0A0ED7C42300")
    expected_studies = tuple(f"1.2.250.1.213.4.5.2.1.{s}" for s in studies) or (
        "1.2.3.4.5.6.7.8.9",
    )
    assert document.study_instance_uids == expected_studies
    assert document.accession_numbers[0] == accession
    assert document.orders[0].accession == InstanceIdentifier(accession_root, accession)
    assert [m.code for m in document.modalities] == [modality]
    assert [m.code_system for m in document.modalities] == ["1.2.840.10008.2.16.4"]
    assert [r.code for r in document.anatomic_regions] == [region]
    assert [p.code for p in document.procedure_codes] == [ccam]
    assert document.service_event_code is not None and document.service_event_code.code == loinc
    assert document.code is not None and document.code.code == "18748-4"
    assert [t.code for t in document.translations] == [loinc]
    assert document.confidentiality_code == "N"
    assert document.language_code == "fr-FR"
    assert document.effective_time == "20210108111700+0100"
    assert (document.service_start, document.service_end) == (
        "20210108102500+0100",
        "20210108111700+0100",
    )
    assert document.patient.ins == "279035121518989"
    assert document.patient.ins_oid == INS_NIR_TEST_OID
    assert document.patient.ipp == "IPP101"
    assert document.patient.birth_place_code == birth_place
    assert not document.patient.qualified  # a CDA never says so: PID-32 does
    assert document.author is not None and document.legal_authenticator is not None
    assert document.author.identifier == InstanceIdentifier("1.2.250.1.71.4.2.1", "801234560801")
    assert document.legal_authenticator.name == "BIDEAULT^Jacques"
    assert document.legal_authenticator.time == "20210108111700+0100"
    assert document.custodian is not None
    assert document.custodian.organization_name == "Centre de radiologie Ambroise"


def test_replacement_report_points_at_its_parent() -> None:
    document = parse_clinical_document(cda_path("CR_G1_MAJ").read_bytes())

    assert document.version_number == 2
    assert document.replaced_document_id == InstanceIdentifier("1.2.250.1.213.4.5.4.407")
    assert document.custodian is not None and document.custodian.organization_id == (
        InstanceIdentifier("1.2.250.1.71.4.2.2", "1750803447")
    )


def test_multi_study_report_lists_both_orders() -> None:
    document = parse_clinical_document(cda_path("CR_F").read_bytes())

    assert document.accession_numbers == ("ACN106", "ACN107")
    assert {o.placer_order for o in document.orders} == {
        InstanceIdentifier("1.2.250.1.213.4.5.2.6", "OPN107")
    }


def test_patient_traits_of_exam_m_differ_from_the_ins() -> None:
    patient = parse_clinical_document(cda_path("CR_M").read_bytes()).patient

    assert (patient.birth_name, patient.first_given_name, patient.given_names) == (
        "ANS-DRIM",
        "PatientBis",
        ("PatientBis",),
    )
    assert (patient.sex, patient.birth_date) == ("M", "20120125")


@pytest.mark.parametrize(
    "xml",
    [
        b'<?xml version="1.0"?><!DOCTYPE ClinicalDocument [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b'<ClinicalDocument xmlns="urn:hl7-org:v3"><id root="1.2"/>&x;</ClinicalDocument>',
        b'<!DOCTYPE ClinicalDocument SYSTEM "http://127.0.0.1:9/evil.dtd">'
        b'<ClinicalDocument xmlns="urn:hl7-org:v3"><id root="1.2"/></ClinicalDocument>',
        b'<?xml version="1.0"?><!-- ' + b"x" * 5000 + b' --><!DOCTYPE a [<!ENTITY a "aaaa">]>'
        b'<ClinicalDocument xmlns="urn:hl7-org:v3"><id root="1.2"/></ClinicalDocument>',
    ],
    ids=["external-entity", "external-dtd", "late-doctype"],
)
def test_doctype_and_entities_are_refused(xml: bytes) -> None:
    with pytest.raises(InvalidDocumentError, match=r"DOCTYPE|entity"):
        parse_clinical_document(xml)


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        (b"<ClinicalDocument xmlns='urn:hl7-org:v3'><id root='1.2'/>", "well-formed"),
        (b"<ClinicalDocument><id root='1.2'/></ClinicalDocument>", "urn:hl7-org:v3"),
        (b"<ClinicalDocument xmlns='urn:hl7-org:v3'/>", "ClinicalDocument/id"),
        (b"\xff\xfe garbage", "well-formed"),
    ],
)
def test_invalid_documents_get_a_clear_error(xml: bytes, message: str) -> None:
    with pytest.raises(InvalidDocumentError, match=message):
        parse_clinical_document(xml)


def test_document_over_the_size_limit_is_refused_before_parsing() -> None:
    data = cda_path("CR_C").read_bytes()
    with pytest.raises(InvalidDocumentError, match="exceeds"):
        parse_clinical_document(data, max_size=len(data) - 1)
    assert parse_clinical_document(data, max_size=len(data)).document_id.root.endswith(".403")
