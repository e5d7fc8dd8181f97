"""Errors of the registry client, so the box retries only what is retryable.

::

    RegistryError
    ├── RegistryUnavailableError   connect error, timeout, 5xx, 429: retry later
    └── RegistryRejectedError      4xx with an OperationOutcome: do not retry as is
        └── RegistryNotFoundError  404: no such entry (or not visible to the requester)
"""

from __future__ import annotations

__all__ = [
    "RegistryError",
    "RegistryNotFoundError",
    "RegistryRejectedError",
    "RegistryUnavailableError",
]


class RegistryError(Exception):
    """Root of the registry client errors."""


class RegistryUnavailableError(RegistryError):
    """The registry could not answer now; the same request may succeed later.

    Parameters
    ----------
    message
        What happened.
    retry_after
        Seconds the registry asked to wait (``Retry-After``), if it said so.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RegistryRejectedError(RegistryError):
    """The registry refused the request; sending it again unchanged will fail again.

    Parameters
    ----------
    status
        The HTTP status.
    diagnostics
        The OperationOutcome's diagnostics (what is wrong).
    issue_code
        The FHIR issue code (``value``, ``conflict``, ``business-rule``...).
    expression
        The element at fault, when the registry named it.
    """

    def __init__(
        self, status: int, diagnostics: str, *, issue_code: str = "", expression: str = ""
    ) -> None:
        super().__init__(f"registry refused the request ({status} {issue_code}): {diagnostics}")
        self.status = status
        self.diagnostics = diagnostics
        self.issue_code = issue_code
        self.expression = expression


class RegistryNotFoundError(RegistryRejectedError):
    """No such entry, or one the requester is not entitled to see."""
