"""DIMSE statuses the box answers, and how errors map to them.

Errors become statuses only here, at the protocol boundary (STYLE.md §6). C-STORE statuses
follow PS3.4 §B.2.3 (Storage Service Class) and PS3.7 §C (general statuses); each failure is sent
with an Error Comment (0000,0902) saying why.
"""

from __future__ import annotations

from enum import IntEnum

from drimbox.errors import (
    FailureReason,
    IndexUnavailableError,
    InvalidInstanceError,
    StorageError,
)

__all__ = [
    "ASSOCIATE_RJ_RESULT_REJECTED_PERMANENT",
    "ASSOCIATE_RJ_SOURCE_SERVICE_USER",
    "MAX_ERROR_COMMENT_LENGTH",
    "AssociateRejectReason",
    "StorageStatus",
    "error_comment",
    "storage_status_for",
]

MAX_ERROR_COMMENT_LENGTH = 64
"""Error Comment (0000,0902) is VR LO: at most 64 characters (PS3.7 §E.1)."""


class StorageStatus(IntEnum):
    """C-STORE response statuses (PS3.4 §B.2.3, PS3.7 §C)."""

    SUCCESS = 0x0000
    """Success (PS3.7 §C.1.1)."""
    PROCESSING_FAILURE = 0x0110
    """Failure: Processing failure, an unexpected error in the box (PS3.7 §C.4.2)."""
    SOP_CLASS_NOT_SUPPORTED = 0x0122
    """Refused: SOP Class not supported (PS3.7 §C.5.3)."""
    OUT_OF_RESOURCES = 0xA700
    """Refused: Out of Resources (PS3.4 §B.2.3): storage full, unavailable, or over the limit."""
    DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    """Error: Data Set does not match SOP Class (PS3.4 §B.2.3): UID mismatch, missing
    mandatory attribute."""
    CANNOT_UNDERSTAND = 0xC000
    """Error: Cannot understand (PS3.4 §B.2.3): truncated, malformed, invalid UID."""


class AssociateRejectReason(IntEnum):
    """A-ASSOCIATE-RJ diagnostics when the source is the service user (PS3.8 §9.3.4)."""

    NO_REASON_GIVEN = 0x01
    CALLING_AE_TITLE_NOT_RECOGNIZED = 0x03
    CALLED_AE_TITLE_NOT_RECOGNIZED = 0x07


ASSOCIATE_RJ_RESULT_REJECTED_PERMANENT = 0x01
"""A-ASSOCIATE-RJ Result: rejected-permanent (PS3.8 §9.3.4)."""

ASSOCIATE_RJ_SOURCE_SERVICE_USER = 0x01
"""A-ASSOCIATE-RJ Source: DICOM UL service-user (PS3.8 §9.3.4)."""

_STATUS_BY_REASON = {
    FailureReason.INVALID_UID: StorageStatus.CANNOT_UNDERSTAND,
    FailureReason.UNREADABLE: StorageStatus.CANNOT_UNDERSTAND,
    FailureReason.MISSING_ATTRIBUTE: StorageStatus.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
    FailureReason.UID_MISMATCH: StorageStatus.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
    FailureReason.STUDY_MISMATCH: StorageStatus.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
    FailureReason.TOO_LARGE: StorageStatus.OUT_OF_RESOURCES,
    FailureReason.OUT_OF_RESOURCES: StorageStatus.OUT_OF_RESOURCES,
    FailureReason.SOP_CLASS_NOT_SUPPORTED: StorageStatus.SOP_CLASS_NOT_SUPPORTED,
}


def storage_status_for(error: Exception) -> tuple[StorageStatus, str]:
    """Return the C-STORE status and Error Comment for an error raised while storing.

    Parameters
    ----------
    error
        What the ingest service raised.

    Returns
    -------
    tuple of StorageStatus and str
        The status, and an Error Comment of at most 64 characters.
    """
    if isinstance(error, InvalidInstanceError):
        status = _STATUS_BY_REASON.get(error.reason, StorageStatus.CANNOT_UNDERSTAND)
        comment = str(error)
    elif isinstance(error, StorageError):
        status, comment = StorageStatus.OUT_OF_RESOURCES, f"storage failed: {error}"
    elif isinstance(error, IndexUnavailableError):
        status, comment = StorageStatus.OUT_OF_RESOURCES, f"index unavailable: {error}"
    else:
        status, comment = (
            StorageStatus.PROCESSING_FAILURE,
            f"internal error: {type(error).__name__}",
        )
    return status, error_comment(comment)


def error_comment(text: str) -> str:
    """Return ``text`` as a valid Error Comment: printable ASCII, at most 64 characters."""
    cleaned = "".join(c if " " <= c <= "~" and c != "\\" else "?" for c in text)
    if len(cleaned) > MAX_ERROR_COMMENT_LENGTH:
        cleaned = cleaned[: MAX_ERROR_COMMENT_LENGTH - 3] + "..."
    return cleaned
