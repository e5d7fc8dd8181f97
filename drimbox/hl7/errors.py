"""Errors of the HL7 adapter, carrying the acknowledgment they turn into.

::

    DrimboxError
    └── HL7Error                      a received message is refused (ACK code + HL7 table 0357)
        ├── MalformedMessageError     not ER7, no MSH, undecodable: AR
        ├── UnsupportedMessageError   message type / event / version / processing id: AR
        └── InvalidReportError        a required field or the CDA report is wrong: AE
            └── InvalidDocumentError  the CDA R2 document itself is refused (DOCTYPE, size, XML)
"""

from __future__ import annotations

from enum import IntEnum, StrEnum

from drimbox.errors import DrimboxError

__all__ = [
    "AcknowledgmentCode",
    "ErrorCode",
    "HL7Error",
    "InvalidDocumentError",
    "InvalidReportError",
    "MalformedMessageError",
    "UnsupportedMessageError",
]


class AcknowledgmentCode(StrEnum):
    """MSA-1 acknowledgment codes, original mode (HL7 v2.5 table 0008)."""

    ACCEPT = "AA"
    ERROR = "AE"
    REJECT = "AR"


class ErrorCode(IntEnum):
    """ERR-3 HL7 error codes (HL7 v2.5 table 0357)."""

    ACCEPTED = 0
    SEGMENT_SEQUENCE_ERROR = 100
    REQUIRED_FIELD_MISSING = 101
    DATA_TYPE_ERROR = 102
    TABLE_VALUE_NOT_FOUND = 103
    UNSUPPORTED_MESSAGE_TYPE = 200
    UNSUPPORTED_EVENT_CODE = 201
    UNSUPPORTED_PROCESSING_ID = 202
    UNSUPPORTED_VERSION_ID = 203
    UNKNOWN_KEY_IDENTIFIER = 204
    DUPLICATE_KEY_IDENTIFIER = 205
    APPLICATION_RECORD_LOCKED = 206
    APPLICATION_INTERNAL_ERROR = 207


class HL7Error(DrimboxError):
    """A received HL7 message is refused.

    Parameters
    ----------
    message
        Why (safe to log and to send back in ERR-8: no patient identity).
    code
        The HL7 table 0357 code for ERR-3.
    location
        Where, as ``SEG-field`` (e.g. ``PID-3``) for ERR-2, when known.
    """

    acknowledgment = AcknowledgmentCode.ERROR

    def __init__(
        self,
        message: str,
        code: ErrorCode = ErrorCode.APPLICATION_INTERNAL_ERROR,
        location: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.location = location


class MalformedMessageError(HL7Error):
    """The bytes are not an HL7 v2 ER7 message (answered AR)."""

    acknowledgment = AcknowledgmentCode.REJECT

    def __init__(
        self,
        message: str,
        code: ErrorCode = ErrorCode.SEGMENT_SEQUENCE_ERROR,
        location: str | None = None,
    ) -> None:
        super().__init__(message, code, location)


class UnsupportedMessageError(HL7Error):
    """Message type, trigger event, version or processing id not handled (answered AR)."""

    acknowledgment = AcknowledgmentCode.REJECT


class InvalidReportError(HL7Error):
    """A required field is missing or wrong, or the report is unusable (answered AE)."""

    def __init__(
        self,
        message: str,
        code: ErrorCode = ErrorCode.REQUIRED_FIELD_MISSING,
        location: str | None = None,
    ) -> None:
        super().__init__(message, code, location)


class InvalidDocumentError(InvalidReportError):
    """The CDA R2 document is refused (DOCTYPE, entities, size, not well-formed, not CDA)."""

    def __init__(self, message: str, location: str | None = "OBX-5") -> None:
        super().__init__(message, ErrorCode.DATA_TYPE_ERROR, location)
