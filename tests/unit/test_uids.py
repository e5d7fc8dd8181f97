"""UID validation (PS3.5 §9.1) and generation."""

from __future__ import annotations

import pytest

from drimbox.dicom.uids import MAX_UID_LENGTH, generate_uid, is_valid_uid, validate_uid
from drimbox.errors import FailureReason, InvalidUIDError


@pytest.mark.parametrize(
    "uid",
    ["1.2.840.10008.1.2.1", "0", "1.0.3", "2.25." + "9" * 59, "1." + "2" * (MAX_UID_LENGTH - 2)],
)
def test_valid_uids_are_accepted(uid: str) -> None:
    assert is_valid_uid(uid)
    assert validate_uid(uid, "SOPInstanceUID") == uid


@pytest.mark.parametrize(
    ("uid", "problem"),
    [
        ("../../etc/passwd", "characters other than digits and dots"),
        ("1.2/3", "characters other than digits and dots"),
        ("1.2.abc", "characters other than digits and dots"),
        ("1." + "2" * MAX_UID_LENGTH, "characters long"),
        ("1.02.3", "leading zero"),
        ("1..2", "empty component"),
        (".1.2", "empty component"),
        ("1.2.", "empty component"),
        ("", "is empty"),
        ("1.2 .3", "characters other than digits and dots"),
    ],
)
def test_invalid_uids_are_refused_with_the_reason(uid: str, problem: str) -> None:
    assert not is_valid_uid(uid)
    with pytest.raises(InvalidUIDError, match=problem) as raised:
        validate_uid(uid, "StudyInstanceUID")
    assert raised.value.reason is FailureReason.INVALID_UID
    assert "StudyInstanceUID" in str(raised.value)


def test_padding_is_removed_before_validation() -> None:
    assert validate_uid("1.2.3\x00", "SOPClassUID") == "1.2.3"
    assert validate_uid("1.2.3 ", "SOPClassUID") == "1.2.3"


def test_absent_uid_is_refused() -> None:
    with pytest.raises(InvalidUIDError, match="absent"):
        validate_uid(None, "SeriesInstanceUID")


def test_a_very_long_refused_value_is_shortened_in_the_message() -> None:
    with pytest.raises(InvalidUIDError) as raised:
        validate_uid("9" * 10_000, "SOPInstanceUID")
    assert len(str(raised.value)) < 300


def test_generated_uids_are_valid_and_distinct() -> None:
    uids = {generate_uid() for _ in range(1000)}
    assert len(uids) == 1000
    assert all(is_valid_uid(uid) and uid.startswith("2.25.") for uid in uids)
