"""INS rules: check keys, OIDs, qualified status, trait and study coherence."""

from __future__ import annotations

import dataclasses

import pytest

from drimbox.hl7.cda import parse_clinical_document
from drimbox.hl7.messages import parse_report_message
from drimbox.identity import (
    INS_NIA_OID,
    INS_NIR_DEMO_OID,
    INS_NIR_NAMESPACE,
    INS_NIR_OID,
    INS_NIR_TEST_OID,
    InsKind,
    PatientIdentity,
    StudyFacts,
    identity_from_dicom,
    identity_mismatches,
    ins_check_key,
    ins_kind,
    ins_problems,
    is_qualified,
    is_test_oid,
    is_valid_nia,
    is_valid_nir,
    publication_problems,
    study_mismatches,
)
from tests.hl7.ans import cda_path, hl7_path

ANS_INS = "279035121518989"  # every DRIM-M sample (PAT-TROIS Dominique, test INS-NIR)
DOMINIQUE = PatientIdentity(
    ins=ANS_INS,
    ins_oid=INS_NIR_TEST_OID,
    qualified=True,
    ipp="IPP101",
    ipp_authority="1.2.250.1.213.4.5.2.4",
    birth_name="PAT-TROIS",
    first_given_name="DOMINIQUE",
    given_names=("DOMINIQUE",),
    birth_date="19790328",
    sex="F",
    birth_place_code="51215",
)


@pytest.mark.parametrize(
    "nir",
    [ANS_INS, "274075176079430", "162018885045327"],  # the samples' INS (PID, OMI, XDS)
)
def test_sample_nirs_have_valid_keys(nir: str) -> None:
    assert is_valid_nir(nir)
    assert ins_check_key(nir[:13]) == int(nir[13:])


@pytest.mark.parametrize(
    "value",
    [
        "279035121518988",  # wrong key
        "27903512151898",  # too short
        "2790351215189890",  # too long
        "27903512151898A",  # letter in the key
        "979035121518989",  # no NIR starts with 9
        "",
        "2790351215189 9",
    ],
)
def test_invalid_nirs_are_refused(value: str) -> None:
    assert not is_valid_nir(value)


def test_corsican_departments_count_as_19_and_18() -> None:
    assert ins_check_key("185022A004012") == 22 == ins_check_key("1850219004012")
    assert ins_check_key("185022B004012") == 49
    assert is_valid_nir("185022A00401222")
    assert is_valid_nir("185022B00401249")
    assert not is_valid_nir("185022B00401222")  # 2B is not 2A


def test_malformed_matricule_raises_on_key_computation() -> None:
    for bad in ("18502AA004012", "1850", "185022C004012"):
        with pytest.raises(ValueError, match="13 characters"):
            ins_check_key(bad)


def test_nia_starts_with_7_or_8_and_has_a_key() -> None:
    assert is_valid_nia("779039912345666")
    assert not is_valid_nia("779039912345667")
    assert not is_valid_nir("779039912345666")
    assert not is_valid_nia(ANS_INS)


def test_oids_say_kind_and_test_status() -> None:
    assert ins_kind(INS_NIR_OID) is InsKind.NIR
    assert ins_kind(INS_NIA_OID) is InsKind.NIA
    assert ins_kind(INS_NIR_TEST_OID) is InsKind.NIR
    assert ins_kind("1.2.250.1.213.4.5.2.4") is None
    assert ins_kind(None) is None
    assert is_test_oid(INS_NIR_TEST_OID) and is_test_oid(INS_NIR_DEMO_OID)
    assert not is_test_oid(INS_NIR_OID) and not is_test_oid(INS_NIA_OID)


def test_sample_messages_use_the_test_oid() -> None:
    pid = parse_report_message(hl7_path("CR_C-ORU").read_bytes()).patient
    assert pid.ins_oid == INS_NIR_TEST_OID
    assert is_test_oid(pid.ins_oid)


@pytest.mark.parametrize(
    ("codes", "has_ins", "qualified"),
    [
        (["VALI"], True, True),
        (["vali "], True, True),
        (["VALI"], False, False),  # validated but no INS: not qualified
        (["PROV"], True, False),
        ([], True, False),
        (["VALI", "DOUT"], True, False),  # doubtful
        (["VALI", "FICT"], True, False),  # fictitious
        (["VALI", "HOMD"], True, True),  # homonym attribute does not disqualify
    ],
)
def test_qualified_status_needs_vali_and_an_ins(
    codes: list[str], has_ins: bool, qualified: bool
) -> None:
    assert is_qualified(codes, has_ins=has_ins) is qualified


def test_valid_identity_has_no_problem_unless_test_oids_are_refused() -> None:
    assert publication_problems(DOMINIQUE) == []
    assert publication_problems(DOMINIQUE, allow_test_oids=False) == [
        "INS has a test/demonstration OID, refused in production"
    ]


def test_unqualified_or_missing_ins_blocks_publication() -> None:
    assert publication_problems(dataclasses.replace(DOMINIQUE, qualified=False)) == [
        "identity is not qualified (PID-32 must be VALI with an INS)"
    ]
    assert publication_problems(PatientIdentity(ipp="IPP1")) == [
        "no INS in the identity",
        "identity is not qualified (PID-32 must be VALI with an INS)",
    ]
    assert ins_problems(dataclasses.replace(DOMINIQUE, ins_oid="1.2.3")) == [
        "INS assigning authority OID is not an INS OID"
    ]
    assert ins_problems(dataclasses.replace(DOMINIQUE, ins="279035121518988")) == [
        "INS is not a valid NIR (format or check key)"
    ]
    assert ins_problems(dataclasses.replace(DOMINIQUE, ins_oid=INS_NIA_OID)) == [
        "INS is not a valid NIA (format or check key)"
    ]


def test_exam_m_traits_contradict_its_ins_in_pid_and_cda() -> None:
    expected = [
        "sex differs from the sex encoded in the INS",
        "birth year differs from the year encoded in the INS",
        "birth month differs from the month encoded in the INS",
    ]
    pid = parse_report_message(hl7_path("CR_M-ORU").read_bytes()).patient
    cda = parse_clinical_document(cda_path("CR_M").read_bytes()).patient
    assert ins_problems(pid) == expected
    assert ins_problems(cda) == expected
    assert ins_problems(parse_report_message(hl7_path("CR_C-ORU").read_bytes()).patient) == []


def test_unknown_birth_month_in_nir_is_not_compared() -> None:
    nir = "1852099123456" + f"{ins_check_key('1852099123456'):02d}"
    identity = PatientIdentity(ins=nir, ins_oid=INS_NIR_OID, birth_date="19850615", sex="M")
    assert ins_problems(identity) == []


def test_identity_mismatches_name_traits_not_values() -> None:
    other = dataclasses.replace(
        DOMINIQUE, birth_name="ANS-DRIM", birth_date="20120125", sex="M", ipp="IPP999"
    )
    reasons = identity_mismatches(DOMINIQUE, other, labels=("report", "images"))
    assert reasons == [
        "birth date differs between report and images",
        "sex differs between report and images",
        "IPP differs between report and images",
        "birth name differs between report and images",
    ]
    assert not any("ANS-DRIM" in r or "2012" in r for r in reasons)


def test_names_compare_without_case_accents_or_separators() -> None:
    accented = dataclasses.replace(DOMINIQUE, birth_name="pat trois", first_given_name="Dominiqué")
    assert identity_mismatches(DOMINIQUE, accented) == []


def test_absent_traits_and_foreign_ipp_authorities_are_not_compared() -> None:
    sparse = PatientIdentity(ins=ANS_INS, ipp="OTHER", ipp_authority="1.2.3")
    assert identity_mismatches(DOMINIQUE, sparse) == []


def test_pid_and_cda_of_derived_samples_disagree_on_birth_place() -> None:
    # DERIVATIVES.md: the derived CR_A.xml has 63220/MAZOIRES where PID-11 keeps 51215
    pid = parse_report_message(hl7_path("CR_A-ORU").read_bytes()).patient
    cda = parse_report_message(hl7_path("CR_A-ORU").read_bytes()).document.patient
    assert identity_mismatches(pid, cda, labels=("PID", "CDA")) == [
        "birth place code differs between PID and CDA"
    ]
    c_oru = parse_report_message(hl7_path("CR_C-ORU").read_bytes())
    assert identity_mismatches(c_oru.patient, c_oru.document.patient) == []


def test_report_on_a_dummy_study_does_not_match_the_images() -> None:
    g2 = parse_report_message(hl7_path("CR_G2-ORU").read_bytes())
    report = StudyFacts(g2.study_instance_uids, g2.accession_numbers, g2.patient)
    images = StudyFacts(("1.2.250.1.213.4.5.2.1.108",), ("ACN108",), DOMINIQUE)
    assert study_mismatches(report, images) == [
        "StudyInstanceUID of the report does not match the images"
    ]


def test_multi_study_report_matches_images_of_either_study() -> None:
    f = parse_report_message(hl7_path("CR_F-ORU").read_bytes())
    report = StudyFacts(f.study_instance_uids, f.accession_numbers, f.patient)
    images = StudyFacts(("1.2.250.1.213.4.5.2.1.107",), ("ACN107",), PatientIdentity(ins=ANS_INS))
    assert study_mismatches(report, images) == []


def test_accession_and_patient_mismatches_are_reported() -> None:
    report = StudyFacts(("1.2.3",), ("ACN1",), DOMINIQUE)
    images = StudyFacts(("1.2.3",), ("ACN2",), PatientIdentity(ins="162018885045327"))
    assert study_mismatches(report, images) == [
        "AccessionNumber of the report does not match the images",
        "INS differs between report and images",
    ]
    assert study_mismatches(StudyFacts(), images) == ["the report names no StudyInstanceUID"]


def test_images_identified_by_ins_oid_or_namespace() -> None:
    by_oid = identity_from_dicom(
        ANS_INS, INS_NIR_TEST_OID, patient_name="PAT-TROIS^DOMINIQUE", birth_date="19790328"
    )
    assert (by_oid.ins, by_oid.ins_oid, by_oid.ipp) == (ANS_INS, INS_NIR_TEST_OID, None)
    assert (by_oid.birth_name, by_oid.first_given_name) == ("PAT-TROIS", "DOMINIQUE")
    # the ANS KIN manifest: IssuerOfPatientID "ASIP-SANTE-INS-NIR" + qualifier OID
    kin = identity_from_dicom(ANS_INS, INS_NIR_NAMESPACE, issuer_oid=INS_NIR_TEST_OID, sex="F")
    assert (kin.ins, kin.ins_oid, kin.sex) == (ANS_INS, INS_NIR_TEST_OID, "F")
    assert identity_mismatches(DOMINIQUE, kin) == []


def test_images_identified_by_a_local_id_carry_an_ipp() -> None:
    local = identity_from_dicom("IPP101", "1.2.250.1.213.4.5.2.4", patient_name="PAT-TROIS")
    assert (local.ins, local.ipp, local.ipp_authority) == (None, "IPP101", "1.2.250.1.213.4.5.2.4")
    assert identity_mismatches(DOMINIQUE, local) == []
    other = identity_from_dicom("IPP999", "1.2.250.1.213.4.5.2.4")
    assert identity_mismatches(DOMINIQUE, other) == ["IPP differs between a and b"]
    empty = identity_from_dicom(None)
    assert empty == PatientIdentity()
