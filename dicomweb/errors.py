"""HTTP translation of the box's errors for DICOMweb (PS3.18 §8.5 status codes).

A router cannot install application-wide exception handlers, so every DICOMweb route uses
:class:`DicomwebRoute`, which turns :class:`drimbox.errors.DrimboxError` and request validation
failures into a JSON body ``{"status": ..., "error": <human reason>, "parameter": <name>}``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from http import HTTPStatus
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from drimbox.errors import (
    AccessDeniedError,
    BlobNotFoundError,
    DrimboxError,
    IndexUnavailableError,
    InvalidInstanceError,
    InvalidQueryError,
    NotAcceptableError,
    NotFoundError,
    StorageError,
)

__all__ = ["DicomwebError", "DicomwebRoute", "error_response"]

_log = logging.getLogger("drimbox.dicomweb")


class DicomwebError(DrimboxError):
    """An HTTP-level refusal decided by the DICOMweb layer itself (413, 415...).

    Parameters
    ----------
    status
        The HTTP status.
    message
        Human-readable reason.
    parameter
        The offending header or parameter, if any.
    """

    def __init__(self, status: HTTPStatus, message: str, parameter: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.parameter = parameter


def error_response(status: HTTPStatus, message: str, parameter: str | None = None) -> JSONResponse:
    """Return the JSON error body every DICOMweb 4xx/5xx carries."""
    body: dict[str, object] = {"status": int(status), "error": message}
    if parameter is not None:
        body["parameter"] = parameter
    return JSONResponse(body, status_code=int(status))


def _translate(error: Exception) -> JSONResponse:
    if isinstance(error, DicomwebError):
        return error_response(error.status, str(error), error.parameter)
    if isinstance(error, InvalidQueryError):
        return error_response(HTTPStatus.BAD_REQUEST, str(error), error.parameter)
    if isinstance(error, InvalidInstanceError):  # e.g. an invalid UID in the path
        return error_response(HTTPStatus.BAD_REQUEST, str(error))
    if isinstance(error, NotFoundError | BlobNotFoundError):
        return error_response(HTTPStatus.NOT_FOUND, str(error) or "not found")
    if isinstance(error, NotAcceptableError):
        return error_response(HTTPStatus.NOT_ACCEPTABLE, str(error))
    if isinstance(error, AccessDeniedError):
        return error_response(HTTPStatus.FORBIDDEN, str(error) or "access denied")
    if isinstance(error, StorageError | IndexUnavailableError):
        _log.error("dicomweb.unavailable error=%s", type(error).__name__)
        return error_response(
            HTTPStatus.SERVICE_UNAVAILABLE, f"storage temporarily unavailable: {error}; retry later"
        )
    _log.error("dicomweb.failed error=%s", type(error).__name__)
    return error_response(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error: {error}")


def _validation_response(error: RequestValidationError) -> JSONResponse:
    problems = list(error.errors())
    first = problems[0] if problems else {}
    location = first.get("loc", ())
    parameter = str(location[-1]) if location else None
    message = f"invalid {parameter}: {first.get('msg', 'invalid request')}"
    return error_response(HTTPStatus.BAD_REQUEST, message, parameter)


class DicomwebRoute(APIRoute):
    """Route class translating errors raised before a response starts into DICOMweb errors."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """Wrap FastAPI's handler with the error translation."""
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as error:
                return _validation_response(error)
            except DrimboxError as error:
                return _translate(error)

        return handle
