"""Helpers shared by the DICOMweb transactions: path UIDs, base URL, negotiation entry points."""

from __future__ import annotations

from fastapi import Request

from dicomweb.media import MediaRange, parse_accept
from drimbox.dicom.uids import is_valid_uid
from drimbox.errors import InvalidQueryError

__all__ = ["accept_ranges", "base_url", "check_uid", "reject_unknown_parameters"]

_RESOURCE_ROOTS = ("/studies", "/series", "/instances", "/wado")


def check_uid(value: str, parameter: str) -> str:
    """Return ``value`` if it is a valid UID (PS3.5 §9.1), else raise a 400 naming ``parameter``."""
    if not is_valid_uid(value):
        shown = value if len(value) <= 70 else value[:67] + "..."
        raise InvalidQueryError(f"{parameter} {shown!r} is not a valid DICOM UID", parameter)
    return value


def base_url(request: Request) -> str:
    """Return the DICOMweb base URL of this request (e.g. ``http://host:8080/dicom-web``).

    The router is mounted under a prefix chosen by the composition root; it is recovered from the
    request path, whose DICOMweb part always starts at one of the resource roots (UIDs and the
    other path parameters cannot hold a ``/``, so the first root found is the right one).
    """
    path = request.url.path
    cut = len(path)
    for root in _RESOURCE_ROOTS:
        index = path.find(root)
        if index >= 0:
            cut = min(cut, index)
    netloc = request.url.netloc
    server = request.scope.get("server")
    if request.url.port is None and server is not None and server[0] == request.url.hostname:
        # a direct client that left the port out of Host (dicomweb-client does): the port it
        # reached is ours; behind a proxy the Host names the proxy and is kept as it is
        default = {"http": 80, "https": 443}.get(request.url.scheme)
        if server[1] != default:
            netloc = f"{netloc}:{server[1]}"
    return f"{request.url.scheme}://{netloc}{path[:cut]}"


def accept_ranges(request: Request) -> list[MediaRange]:
    """Return the parsed ``Accept`` header (400 when malformed)."""
    return parse_accept(request.headers.get("accept"))


def reject_unknown_parameters(request: Request, allowed: frozenset[str]) -> None:
    """Raise a 400 naming the first query parameter not in ``allowed`` (case-insensitive)."""
    for name in request.query_params:
        if name.lower() not in allowed:
            raise InvalidQueryError(f"unknown query parameter {name!r}", name)
