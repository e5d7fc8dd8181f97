"""One error tree for the box.

Library exceptions are translated into these at the adapter edge; they become DIMSE statuses,
HL7 ACK codes or HTTP statuses only at the protocol boundary (``drimbox.dimse.status``,
``dicomweb``, ``drimbox.hl7``).

::

    DrimboxError
    ├── ConfigurationError            unsafe or invalid settings; the message says how to fix it
    ├── InvalidInstanceError          a received instance is refused (carries a FailureReason)
    │   ├── InvalidUIDError           a UID is not a valid DICOM UID (PS3.5 §9)
    │   ├── MissingAttributeError     a mandatory attribute is absent or empty
    │   ├── UIDMismatchError          command and data set disagree (PS3.7 §9.3.1)
    │   ├── InstanceTooLargeError     over the configured size limit
    │   └── UnreadableInstanceError   truncated or undecodable data set
    ├── StorageError                  the blob store could not complete (retryable)
    │   ├── StorageFullError          no space left
    │   └── StorageUnavailableError   server down, timeout, permission
    ├── BlobNotFoundError             a key that the blob store does not hold
    ├── IndexUnavailableError         the index database could not complete (retryable)
    ├── NotFoundError                 an unknown study / series / instance / resource
    ├── InvalidQueryError             a malformed query parameter (names the parameter)
    ├── NotAcceptableError            no representation satisfies the request (HTTP 406)
    ├── AccessDeniedError             the caller may not do this
    └── PacsError                     the site's PACS could not be queried or did not send
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "AccessDeniedError",
    "BlobNotFoundError",
    "ConfigurationError",
    "DrimboxError",
    "FailureReason",
    "IndexUnavailableError",
    "InstanceTooLargeError",
    "InvalidInstanceError",
    "InvalidQueryError",
    "InvalidUIDError",
    "MissingAttributeError",
    "NotAcceptableError",
    "NotFoundError",
    "PacsError",
    "StorageError",
    "StorageFullError",
    "StorageUnavailableError",
    "UIDMismatchError",
    "UnreadableInstanceError",
]


class FailureReason(StrEnum):
    """Why an instance was refused, independent of the protocol that carried it.

    The DIMSE adapter maps these to C-STORE statuses (PS3.4 §B.2.3) and DICOMweb maps them to
    Failure Reason (0008,1197) values (PS3.18 §10.5.3).
    """

    INVALID_UID = "invalid-uid"
    MISSING_ATTRIBUTE = "missing-attribute"
    UID_MISMATCH = "uid-mismatch"
    TOO_LARGE = "too-large"
    UNREADABLE = "unreadable"
    SOP_CLASS_NOT_SUPPORTED = "sop-class-not-supported"
    STUDY_MISMATCH = "study-mismatch"
    OUT_OF_RESOURCES = "out-of-resources"


class DrimboxError(Exception):
    """Root of every error raised by the box."""


class ConfigurationError(DrimboxError):
    """Settings are invalid or unsafe; the message says what to change."""


class InvalidInstanceError(DrimboxError):
    """A received instance is refused.

    Parameters
    ----------
    message
        Human-readable reason (safe to log: no patient identity).
    reason
        The protocol-independent failure reason.
    """

    def __init__(self, message: str, reason: FailureReason = FailureReason.UNREADABLE) -> None:
        super().__init__(message)
        self.reason = reason


class InvalidUIDError(InvalidInstanceError):
    """A UID is not a valid DICOM UID (PS3.5 §9.1)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, FailureReason.INVALID_UID)


class MissingAttributeError(InvalidInstanceError):
    """A mandatory attribute is absent or empty."""

    def __init__(self, message: str) -> None:
        super().__init__(message, FailureReason.MISSING_ATTRIBUTE)


class UIDMismatchError(InvalidInstanceError):
    """The command's Affected SOP Class/Instance UID disagrees with the data set."""

    def __init__(self, message: str) -> None:
        super().__init__(message, FailureReason.UID_MISMATCH)


class InstanceTooLargeError(InvalidInstanceError):
    """The instance exceeds the configured maximum size."""

    def __init__(self, message: str) -> None:
        super().__init__(message, FailureReason.TOO_LARGE)


class UnreadableInstanceError(InvalidInstanceError):
    """The data set is truncated or cannot be decoded."""

    def __init__(self, message: str) -> None:
        super().__init__(message, FailureReason.UNREADABLE)


class StorageError(DrimboxError):
    """The blob store could not complete an operation; the caller may retry later."""


class StorageFullError(StorageError):
    """The blob store has no space left."""


class StorageUnavailableError(StorageError):
    """The blob store cannot be reached or refused the operation."""


class BlobNotFoundError(DrimboxError):
    """The blob store holds no object under that key."""


class IndexUnavailableError(DrimboxError):
    """The index database could not complete an operation; the caller may retry later."""


class NotFoundError(DrimboxError):
    """An unknown study, series, instance or resource."""


class InvalidQueryError(DrimboxError):
    """A malformed query.

    Parameters
    ----------
    message
        What is wrong.
    parameter
        The offending parameter or attribute name, when there is one.
    """

    def __init__(self, message: str, parameter: str | None = None) -> None:
        super().__init__(message)
        self.parameter = parameter


class NotAcceptableError(DrimboxError):
    """No representation satisfies the request's Accept header."""


class AccessDeniedError(DrimboxError):
    """The caller is not allowed to do this."""


class PacsError(DrimboxError):
    """The site's PACS could not be reached, refused, or failed to send a study."""
