"""Blob keys: opaque, random, strictly validated, fanned out on disk."""

from __future__ import annotations

import pytest

from drimbox.errors import BlobNotFoundError
from drimbox.storage.keys import (
    KEY_BYTES,
    KEY_PATTERN,
    fan_out,
    is_valid_key,
    new_key,
    validate_key,
)


def test_new_keys_are_128_bit_lower_case_hex_and_unique() -> None:
    keys = {new_key() for _ in range(1000)}
    assert len(keys) == 1000
    assert KEY_BYTES * 8 == 128
    assert all(KEY_PATTERN.fullmatch(key) and len(key) == 32 for key in keys)


def test_validate_key_returns_a_well_formed_key_unchanged() -> None:
    key = new_key()
    assert validate_key(key) == key
    assert is_valid_key(key)


@pytest.mark.parametrize(
    "key",
    [
        "../" + "0" * 29,
        "/" + "0" * 31,
        "1.2.840.10008.5.1.4.1.1.2",
        "0" * 31 + "\n",
        "0" * 31 + "G",
        "0" * 32 + "/",
        "ABCDEF" + "0" * 26,
        "",
        None,
        0,
        b"0" * 32,
    ],
    ids=repr,
)
def test_validate_key_refuses_anything_not_made_by_new_key(key: object) -> None:
    assert not is_valid_key(key)
    with pytest.raises(BlobNotFoundError, match="not a blob key") as raised:
        validate_key(key)
    if isinstance(key, str) and key:
        assert key not in str(raised.value)


def test_fan_out_uses_the_first_two_hex_digits_as_one_directory_level() -> None:
    key = "abcdef" + "0" * 26
    assert fan_out(key) == ("ab", key)


def test_fan_out_validates_the_key_itself() -> None:
    with pytest.raises(BlobNotFoundError):
        fan_out("../../etc/passwd")
