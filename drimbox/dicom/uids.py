"""DICOM Unique Identifiers: validation of received UIDs and generation of new ones.

A UID (PS3.5 §9.1) is at most 64 characters of digits and dots, made of numeric components
separated by dots; no component is empty, and a component of more than one digit does not start
with ``0``. Received UIDs end up in the index and in URLs, so anything else (path-like strings,
over-long or non-numeric values) is refused with :class:`drimbox.errors.InvalidUIDError`.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

from drimbox.errors import InvalidUIDError, MissingAttributeError, UIDMismatchError

__all__ = [
    "MAX_UID_LENGTH",
    "UUID_DERIVED_UID_ROOT",
    "InstanceIdentity",
    "check_uids_agree",
    "generate_uid",
    "instance_identity",
    "is_valid_uid",
    "raw_text",
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


@dataclass(frozen=True, slots=True)
class InstanceIdentity:
    """The UIDs that place an instance in the hierarchy, validated."""

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str


_SOP_CLASS_UID = BaseTag(0x00080016)
_SOP_INSTANCE_UID = BaseTag(0x00080018)
_STUDY_INSTANCE_UID = BaseTag(0x0020000D)
_SERIES_INSTANCE_UID = BaseTag(0x0020000E)
_PATIENT_ID = BaseTag(0x00100020)
_IDENTITY_TAGS = (
    ("SOPClassUID", _SOP_CLASS_UID),
    ("SOPInstanceUID", _SOP_INSTANCE_UID),
    ("StudyInstanceUID", _STUDY_INSTANCE_UID),
    ("SeriesInstanceUID", _SERIES_INSTANCE_UID),
)


def raw_text(dataset: Dataset, tag: BaseTag) -> str | None:
    """Return an element's value as text without converting it (no validation warnings)."""
    if tag not in dataset:
        return None
    element = dataset.get_item(tag)
    value = element.value
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("ascii", errors="replace").rstrip("\x00 ")
    return str(value).rstrip("\x00 ")


def instance_identity(dataset: Dataset) -> InstanceIdentity:
    """Return the validated SOP Class, SOP Instance, Study and Series Instance UIDs.

    Parameters
    ----------
    dataset
        The parsed data set (raw values are read without conversion).

    Returns
    -------
    InstanceIdentity

    Raises
    ------
    MissingAttributeError
        A UID is absent or empty (Type 1), or Patient ID (0010,0020) is absent (Type 2).
    InvalidUIDError
        A UID is not valid (PS3.5 §9.1).
    """
    uids: dict[str, str] = {}
    for keyword, tag in _IDENTITY_TAGS:
        text = raw_text(dataset, tag)
        if not text:
            state = "absent" if text is None else "empty"
            raise MissingAttributeError(f"{keyword} {tag} is {state}; it is mandatory (Type 1)")
        uids[keyword] = validate_uid(text, keyword)
    if _PATIENT_ID not in dataset:
        raise MissingAttributeError(
            "PatientID (0010,0020) is absent; it is Type 2: it may be empty, not absent "
            "(PS3.3 §C.7.1.1)"
        )
    return InstanceIdentity(
        sop_class_uid=uids["SOPClassUID"],
        sop_instance_uid=uids["SOPInstanceUID"],
        study_instance_uid=uids["StudyInstanceUID"],
        series_instance_uid=uids["SeriesInstanceUID"],
    )


def check_uids_agree(name: str, declared: str, in_data_set: str, where: str) -> None:
    """Raise :class:`UIDMismatchError` unless the declared UID is the data set's.

    Parameters
    ----------
    name
        What is compared (``"SOP Instance UID"``).
    declared
        The UID of the C-STORE command (``where="command"``) or of the File Meta Information.
    in_data_set
        The data set's (validated) UID.
    where
        ``"command"`` or ``"meta"``, for the message.
    """
    declared = declared.rstrip("\x00 ")
    if declared != in_data_set:
        origin = "the C-STORE command" if where == "command" else "the File Meta Information"
        raise UIDMismatchError(
            f"{name} {declared[:64]!r} of {origin} differs from {in_data_set!r} in the data set "
            "(PS3.4 §B.2.3)"
        )
