"""Content negotiation for DICOMweb (PS3.18 §8.7): ``Accept`` parsing and the choices it implies.

The ``Accept`` header is parsed leniently where real clients are sloppy (empty list members such
as the trailing comma of the ANS samples, parameters after ``q``, ``boundary=`` in a request) and
strictly where the meaning would be guessed (a member without ``type/subtype``, a bad ``q``).

Transfer syntax choice (PS3.18 §8.7.3.5): the stored transfer syntax is served whenever some
acceptable media range admits it (``transfer-syntax=*`` or the stored UID), otherwise the most
preferred (highest ``q``) syntax that the box can transcode to; nothing acceptable is a 406.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from drimbox.errors import InvalidQueryError, NotAcceptableError

__all__ = [
    "ANY_TRANSFER_SYNTAX",
    "APPLICATION_DICOM",
    "APPLICATION_DICOM_JSON",
    "APPLICATION_JSON",
    "APPLICATION_OCTET_STREAM",
    "FRAME_MEDIA_TYPES",
    "MULTIPART_RELATED",
    "AcceptedTransferSyntaxes",
    "MediaRange",
    "accepted_transfer_syntaxes",
    "choose_frame_media_type",
    "choose_media_type",
    "choose_transfer_syntax",
    "parse_accept",
]

MULTIPART_RELATED = "multipart/related"
APPLICATION_DICOM = "application/dicom"
APPLICATION_DICOM_JSON = "application/dicom+json"
APPLICATION_JSON = "application/json"
APPLICATION_OCTET_STREAM = "application/octet-stream"
ANY_TRANSFER_SYNTAX = "*"
"""``transfer-syntax=*``: any transfer syntax, i.e. as stored (PS3.18 §8.7.3.5.2)."""

_NATIVE_SYNTAXES = frozenset(
    {ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian}
)
"""Syntaxes whose frames are native little-endian pixels (PS3.18 §8.7.3.3.2 octet-stream)."""

FRAME_MEDIA_TYPES: MappingProxyType[str, str] = MappingProxyType(
    {
        "1.2.840.10008.1.2.5": "image/dicom-rle",
        "1.2.840.10008.1.2.4.50": "image/jpeg",
        "1.2.840.10008.1.2.4.51": "image/jpeg",
        "1.2.840.10008.1.2.4.57": "image/jpeg",
        "1.2.840.10008.1.2.4.70": "image/jpeg",
        "1.2.840.10008.1.2.4.80": "image/jls",
        "1.2.840.10008.1.2.4.81": "image/jls",
        "1.2.840.10008.1.2.4.90": "image/jp2",
        "1.2.840.10008.1.2.4.91": "image/jp2",
        "1.2.840.10008.1.2.4.92": "image/jpx",
        "1.2.840.10008.1.2.4.93": "image/jpx",
        "1.2.840.10008.1.2.4.201": "image/jhc",
        "1.2.840.10008.1.2.4.202": "image/jhc",
        "1.2.840.10008.1.2.4.203": "image/jhc",
    }
)
"""Media type of compressed frames per transfer syntax (PS3.18 Table 8.7.3-4)."""

_FRAME_DEFAULT_SYNTAX: MappingProxyType[str, str] = MappingProxyType(
    {
        APPLICATION_OCTET_STREAM: ExplicitVRLittleEndian,
        "image/dicom-rle": "1.2.840.10008.1.2.5",
        "image/x-dicom-rle": "1.2.840.10008.1.2.5",
        "image/jpeg": "1.2.840.10008.1.2.4.50",
        "image/jls": "1.2.840.10008.1.2.4.80",
        "image/x-jls": "1.2.840.10008.1.2.4.80",
        "image/jp2": "1.2.840.10008.1.2.4.90",
        "image/jpx": "1.2.840.10008.1.2.4.92",
    }
)
"""Default transfer syntax of each frame media type (PS3.18 Table 8.7.3-4, bold entries)."""


@dataclass(frozen=True, slots=True)
class MediaRange:
    """One member of an ``Accept`` header.

    Attributes
    ----------
    media_type
        ``type/subtype`` in lower case (``*/*``, ``image/*`` allowed).
    parameters
        Parameters by lower-case name, unquoted (``type``, ``transfer-syntax``...), ``q`` excluded.
    quality
        The ``q`` weight, 0 to 1.
    """

    media_type: str
    parameters: Mapping[str, str] = field(default_factory=dict)
    quality: float = 1.0

    def matches(self, media_type: str) -> bool:
        """Whether this range admits the concrete ``media_type``."""
        major, _, _minor = media_type.partition("/")
        return self.media_type in (media_type, "*/*", f"{major}/*")


def _split(text: str, separator: str) -> list[str]:
    """Split on ``separator`` outside double-quoted strings."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def parse_accept(header: str | None) -> list[MediaRange]:
    """Parse an ``Accept`` header into media ranges, most preferred first.

    Parameters
    ----------
    header
        The header value; ``None`` or blank means ``*/*``.

    Returns
    -------
    list of MediaRange
        Sorted by decreasing ``q`` (stable: equal weights keep the client's order).

    Raises
    ------
    InvalidQueryError
        A member has no ``type/subtype`` or an invalid ``q`` (HTTP 400, parameter ``Accept``).
    """
    if header is None or not header.strip():
        return [MediaRange("*/*")]
    ranges: list[MediaRange] = []
    for member in _split(header, ","):
        if not member.strip():
            continue  # "a, , b," — tolerated, as real clients send it (ANS samples)
        pieces = _split(member, ";")
        media_type = pieces[0].strip().lower()
        major, slash, minor = media_type.partition("/")
        if not slash or not major or not minor or " " in media_type:
            raise InvalidQueryError(f"Accept: {media_type!r} is not a type/subtype", "Accept")
        parameters: dict[str, str] = {}
        quality = 1.0
        for piece in pieces[1:]:
            name, equals, value = piece.strip().partition("=")
            name = name.strip().lower()
            if not name:
                continue
            value = value.strip().strip('"')
            if name == "q":
                try:
                    quality = float(value)
                except ValueError:
                    raise InvalidQueryError(
                        f"Accept: q={value!r} is not a number", "Accept"
                    ) from None
                if not 0.0 <= quality <= 1.0:
                    raise InvalidQueryError(f"Accept: q={value} is outside 0..1", "Accept")
            elif equals:
                parameters[name] = value
        ranges.append(MediaRange(media_type, MappingProxyType(parameters), quality))
    return sorted(ranges, key=lambda media_range: -media_range.quality)


@dataclass(frozen=True, slots=True)
class AcceptedTransferSyntaxes:
    """Transfer syntaxes acceptable for a payload type, most preferred first.

    Attributes
    ----------
    preferred
        ``(transfer syntax UID or "*", q)`` with ``q > 0``, by decreasing ``q``.
    refused
        UIDs explicitly given ``q=0``.
    """

    preferred: tuple[tuple[str, float], ...]
    refused: frozenset[str] = frozenset()

    def admits(self, transfer_syntax: str) -> bool:
        """Whether ``transfer_syntax`` may be sent as is."""
        if transfer_syntax in self.refused:
            return False
        return any(uid in (transfer_syntax, ANY_TRANSFER_SYNTAX) for uid, _ in self.preferred)


def accepted_transfer_syntaxes(
    ranges: Iterable[MediaRange], payload: str = APPLICATION_DICOM
) -> AcceptedTransferSyntaxes:
    """Return which transfer syntaxes the client accepts for multipart ``payload`` parts.

    ``multipart/related; type="application/dicom"`` without ``transfer-syntax`` means Explicit VR
    Little Endian (PS3.18 §8.7.3.5.2); a wildcard (``*/*``, ``multipart/*``, ``type="*/*"``)
    means any. A bare ``application/dicom`` is taken as its multipart form.

    Parameters
    ----------
    ranges
        Parsed ``Accept`` members.
    payload
        The media type of the parts (``application/dicom``).
    """
    preferred: list[tuple[str, float]] = []
    refused: set[str] = set()
    for media_range in ranges:
        if media_range.media_type in ("*/*", "multipart/*"):
            syntax = media_range.parameters.get("transfer-syntax", ANY_TRANSFER_SYNTAX)
        elif media_range.media_type == MULTIPART_RELATED:
            part_type = media_range.parameters.get("type", payload).lower()
            if not MediaRange(part_type).matches(payload) and part_type != payload:
                continue
            default = ExplicitVRLittleEndian if part_type == payload else ANY_TRANSFER_SYNTAX
            syntax = media_range.parameters.get("transfer-syntax", default)
        elif media_range.media_type == payload:
            syntax = media_range.parameters.get("transfer-syntax", ExplicitVRLittleEndian)
        else:
            continue
        if media_range.quality == 0.0:
            refused.add(syntax)
        else:
            preferred.append((syntax, media_range.quality))
    return AcceptedTransferSyntaxes(tuple(preferred), frozenset(refused))


def choose_transfer_syntax(
    stored: str,
    accepted: AcceptedTransferSyntaxes,
    can_transcode: Callable[[str, str], bool],
) -> str:
    """Return the transfer syntax to send an instance stored in ``stored``.

    Raises
    ------
    NotAcceptableError
        Neither the stored syntax nor any transcodable one is acceptable (HTTP 406).
    """
    if accepted.admits(stored):
        return stored
    for syntax, _quality in accepted.preferred:
        if syntax == ANY_TRANSFER_SYNTAX:
            syntax = ExplicitVRLittleEndian  # "any" but the stored one: the default syntax
        if syntax in accepted.refused:
            continue
        if syntax == stored or can_transcode(stored, syntax):
            return syntax
    wanted = ", ".join(uid for uid, _ in accepted.preferred) or "none of application/dicom"
    raise NotAcceptableError(
        f"the instance is stored in {stored} ({UID(stored).name}) and cannot be sent in any "
        f"acceptable transfer syntax ({wanted})"
    )


def choose_media_type(ranges: Iterable[MediaRange], offered: Iterable[str]) -> str:
    """Return the first of ``offered`` (server preference order) with the best client weight.

    Raises
    ------
    NotAcceptableError
        No offered type is acceptable.
    """
    best: tuple[float, int, str] | None = None
    ranges = list(ranges)
    for rank, media_type in enumerate(offered):
        weights = [r.quality for r in ranges if r.matches(media_type)]
        if weights and max(weights) > 0 and (best is None or max(weights) > best[0]):
            best = (max(weights), rank, media_type)
    if best is None:
        raise NotAcceptableError(f"acceptable types are {', '.join(offered)}")
    return best[2]


def _frame_media_type(transfer_syntax: str) -> str:
    if transfer_syntax in _NATIVE_SYNTAXES or transfer_syntax == ExplicitVRBigEndian:
        return APPLICATION_OCTET_STREAM
    return FRAME_MEDIA_TYPES.get(transfer_syntax, APPLICATION_OCTET_STREAM)


def choose_frame_media_type(
    ranges: Iterable[MediaRange],
    stored: str,
    can_transcode: Callable[[str, str], bool],
) -> tuple[str, str]:
    """Choose how to send frames (or pixel bulk data) of an instance stored in ``stored``.

    Accepts ``multipart/related; type="<frame type>"[; transfer-syntax=...]`` members and
    single-part forms alike (PS3.18 §8.7.3.3). Stored frames are sent as they are when admitted;
    otherwise the most preferred syntax the box can produce is chosen.

    Returns
    -------
    tuple of str
        ``(media type of each part, transfer syntax UID)``.

    Raises
    ------
    NotAcceptableError
        No acceptable representation can be produced.
    """
    stored_type = _frame_media_type(stored)
    if stored in _NATIVE_SYNTAXES:
        stored = ExplicitVRLittleEndian  # native frames are the same bytes in every LE syntax
    candidates: list[tuple[str, str]] = []
    for media_range in ranges:
        if media_range.quality == 0.0:
            continue
        part_type = media_range.media_type
        if part_type in (MULTIPART_RELATED, "multipart/*"):
            part_type = media_range.parameters.get("type", "*/*").lower()
        syntax = media_range.parameters.get("transfer-syntax")
        probe = MediaRange(part_type)
        if (
            probe.matches(stored_type)
            and syntax in (None, ANY_TRANSFER_SYNTAX, stored)
            and (stored_type != APPLICATION_OCTET_STREAM or stored == ExplicitVRLittleEndian)
        ):
            return stored_type, stored
        if "*" in part_type:
            continue
        target = syntax if syntax not in (None, ANY_TRANSFER_SYNTAX) else None
        target = target or _FRAME_DEFAULT_SYNTAX.get(part_type)
        if target is not None:
            candidates.append((part_type, target))
    for part_type, target in candidates:
        producible = target == stored or can_transcode(stored, target)
        if producible and (
            _frame_media_type(target) == part_type or part_type.startswith("image/x-")
        ):
            return part_type, target
    raise NotAcceptableError(
        f"frames are stored as {stored_type} ({stored}); no acceptable media type can be produced"
    )
