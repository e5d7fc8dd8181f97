"""DICOM Unique Identifiers: validation of received UIDs and generation of new ones.

A UID (PS3.5 §9.1) is at most 64 characters of digits and dots, made of numeric components
separated by dots; no component is empty, and a component of more than one digit does not start
with ``0``. Received UIDs end up in the index and in URLs, so anything else (path-like strings,
over-long or non-numeric values) is refused with :class:`drimbox.errors.InvalidUIDError`.
"""

from __future__ import annotations

import re
import uuid

from drimbox.errors import InvalidUIDError

__all__ = [
    "MAX_UID_LENGTH",
    "UUID_DERIVED_UID_ROOT",
    "generate_uid",
    "is_valid_uid",
    "validate_uid",
]

MAX_UID_LENGTH = 64
"""Maximum length of a UID in characters (PS3.5 §9.1, VR UI in PS3.5 §6.2)."""

UUID_DERIVED_UID_ROOT = "2.25."
"""Root of UIDs derived from a UUID (PS3.5 §B.2)."""

_MAX_SHOWN_CHARACTERS = 70
_UID_PATTERN = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*")


def is_valid_uid(value: str) -> bool:
    """Return whether ``value`` is a valid DICOM UID (PS3.5 §9.1).

    Parameters
    ----------
    value
        The candidate, without padding.

    Returns
    -------
    bool
    """
    return len(value) <= MAX_UID_LENGTH and _UID_PATTERN.fullmatch(value) is not None


def validate_uid(value: str | None, name: str) -> str:
    """Return ``value`` if it is a valid UID, else raise.

    Parameters
    ----------
    value
        The received value; trailing NUL/space padding (PS3.5 §6.2) is removed first.
    name
        The attribute's keyword, for the error message.

    Returns
    -------
    str
        The UID without padding.

    Raises
    ------
    InvalidUIDError
        Naming the attribute and saying what is wrong.
    """
    if value is None:
        raise InvalidUIDError(f"{name} is absent")
    uid = value.rstrip("\x00 ")
    if is_valid_uid(uid):
        return uid
    shown = uid if len(uid) <= _MAX_SHOWN_CHARACTERS else uid[:_MAX_SHOWN_CHARACTERS] + "..."
    if not uid:
        problem = "is empty"
    elif len(uid) > MAX_UID_LENGTH:
        problem = f"is {len(uid)} characters long (at most {MAX_UID_LENGTH})"
    elif not set(uid) <= set("0123456789."):
        problem = "contains characters other than digits and dots"
    else:
        problem = "has an empty component or a component with a leading zero"
    raise InvalidUIDError(f"{name} {shown!r} is not a valid DICOM UID: it {problem} (PS3.5 §9.1)")


def generate_uid() -> str:
    """Return a new, globally unique UID derived from a random UUID (PS3.5 §B.2)."""
    return UUID_DERIVED_UID_ROOT + str(uuid.uuid4().int)
