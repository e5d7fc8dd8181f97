"""INS rules of the registry (NIR/NIA check key, Corsica, authorities, production)."""

from __future__ import annotations

import pytest

from registry._ins import (
    INS_NIA_OID,
    INS_NIR_DEMO_OID,
    INS_NIR_OID,
    INS_NIR_TEST_OID,
    InsError,
    InsKind,
    ins_check_key,
    validate_ins,
)
from tests.registry.kos import SAMPLE_INS, make_ins


def test_ans_sample_ins_has_a_valid_key_under_the_test_oid() -> None:
    assert validate_ins(SAMPLE_INS, INS_NIR_TEST_OID, production=False) is InsKind.NIR


def test_check_key_is_97_minus_body_modulo_97() -> None:
    assert ins_check_key("2790351215189") == 97 - 2790351215189 % 97 == 89


@pytest.mark.parametrize(("department", "replacement"), [("2A", "19"), ("2B", "18")])
def test_corsica_departments_count_as_19_and_18(department: str, replacement: str) -> None:
    body = f"18505{department}123456"
    assert ins_check_key(body) == 97 - int(f"18505{replacement}123456") % 97
    validate_ins(make_ins(123456, corsica=department), INS_NIR_OID, production=True)


def test_wrong_key_is_refused_without_echoing_the_matricule() -> None:
    wrong = SAMPLE_INS[:13] + "00"
    with pytest.raises(InsError, match="check key") as caught:
        validate_ins(wrong, INS_NIR_TEST_OID, production=False)
    assert wrong not in str(caught.value)


@pytest.mark.parametrize(
    "value", ["27903512151898", "2790351215189890", "279035121518A89", "979035121518989", ""]
)
def test_malformed_matricules_are_refused(value: str) -> None:
    with pytest.raises(InsError, match="15 characters"):
        validate_ins(value, INS_NIR_TEST_OID, production=False)


@pytest.mark.parametrize("oid", [INS_NIR_TEST_OID, INS_NIR_DEMO_OID])
def test_test_and_demo_oids_are_refused_in_production_only(oid: str) -> None:
    validate_ins(SAMPLE_INS, oid, production=False)
    with pytest.raises(InsError, match="test OID"):
        validate_ins(SAMPLE_INS, oid, production=True)


def test_unknown_authority_is_refused() -> None:
    with pytest.raises(InsError, match="unknown INS authority"):
        validate_ins(SAMPLE_INS, "1.2.250.1.213.1.4.2", production=False)


def test_nia_authority_gives_nia_kind() -> None:
    assert validate_ins(make_ins(42), INS_NIA_OID, production=True) is InsKind.NIA
