"""``multipart/related`` (RFC 2387) for DICOMweb: a streaming writer and a streaming parser.

The writer turns parts (headers + an iterable of byte chunks) into a body of coalesced chunks of
about ``flush_size`` bytes, one part at a time, so memory stays bounded whatever the study size.
The parser is push-based: it is fed the request body chunk by chunk and returns events, never
holding more than one chunk plus a delimiter's length of body.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from drimbox.errors import InvalidQueryError

__all__ = [
    "MultipartParser",
    "PartData",
    "PartEnd",
    "PartStart",
    "multipart_content_type",
    "multipart_length",
    "new_boundary",
    "parse_content_type",
    "part_head",
    "write_multipart",
]

_CRLF = b"\r\n"
_DEFAULT_FLUSH_SIZE = 4 << 20
_MAX_HEADER_BYTES = 16 * 1024
"""Largest accepted header block of one part (a DICOM part needs a few hundred bytes)."""


def new_boundary() -> str:
    """Return a fresh boundary that cannot occur in DICOM data by chance."""
    return uuid.uuid4().hex


def multipart_content_type(
    boundary: str, part_type: str, transfer_syntax: str | None = None
) -> str:
    """Return the ``Content-Type`` of a ``multipart/related`` response (PS3.18 §8.6.1.2)."""
    value = f'multipart/related; type="{part_type}"; boundary={boundary}'
    if transfer_syntax is not None:
        value += f"; transfer-syntax={transfer_syntax}"
    return value


def parse_content_type(header: str) -> tuple[str, dict[str, str]]:
    """Split a ``Content-Type`` into its lower-case media type and parameters (unquoted)."""
    pieces = header.split(";")
    parameters: dict[str, str] = {}
    for piece in pieces[1:]:
        name, _, value = piece.strip().partition("=")
        if name:
            parameters[name.strip().lower()] = value.strip().strip('"')
    return pieces[0].strip().lower(), parameters


def part_head(boundary: str, headers: Mapping[str, str]) -> bytes:
    """The delimiter and header block that open a part."""
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return b"--" + boundary.encode("ascii") + _CRLF + head.encode("latin-1") + _CRLF


def multipart_length(boundary: str, parts: Iterable[tuple[Mapping[str, str], int]]) -> int:
    """Exact length of the body :func:`write_multipart` produces for parts of known sizes.

    Sending it as ``Content-Length`` spares the server chunked framing of a large body.
    """
    total = len(b"--" + boundary.encode("ascii") + b"--" + _CRLF)
    for headers, size in parts:
        total += len(part_head(boundary, headers)) + size + len(_CRLF)
    return total


def write_multipart(
    parts: Iterable[tuple[Mapping[str, str], Iterable[bytes]]],
    boundary: str,
    flush_size: int = _DEFAULT_FLUSH_SIZE,
) -> Iterator[bytes]:
    """Yield a ``multipart/related`` body from ``(headers, chunks)`` pairs.

    Small pieces are coalesced into chunks of at least ``flush_size`` bytes (fewer thread hops per
    byte); at most about two chunks are held at a time. The first chunk of the first part goes
    out at once, so the time to first byte does not wait for a full flush.
    """
    pending: list[bytes] = []
    pending_size = 0
    first = True
    for headers, chunks in parts:
        pending.append(part_head(boundary, headers))
        pending_size += len(pending[-1])
        for chunk in chunks:
            pending.append(chunk)
            pending_size += len(chunk)
            if pending_size >= flush_size or first:
                first = False
                yield b"".join(pending)
                pending, pending_size = [], 0
        pending.append(_CRLF)
        pending_size += len(_CRLF)
    pending.append(b"--" + boundary.encode("ascii") + b"--" + _CRLF)
    yield b"".join(pending)


@dataclass(frozen=True, slots=True)
class PartStart:
    """A part begins; ``headers`` by lower-case name."""

    headers: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class PartData:
    """Some bytes of the current part's body."""

    data: bytes


@dataclass(frozen=True, slots=True)
class PartEnd:
    """The current part is complete."""


Event = PartStart | PartData | PartEnd

_PREAMBLE, _HEADERS, _BODY, _AFTER_DELIMITER, _DONE = range(5)


class MultipartParser:
    """Incremental ``multipart/related`` parser.

    Parameters
    ----------
    boundary
        The boundary from the request's ``Content-Type``.

    Raises
    ------
    InvalidQueryError
        From :meth:`feed` or :meth:`close` when the body is malformed or truncated.
    """

    def __init__(self, boundary: str) -> None:
        if not boundary or len(boundary) > 70:
            raise InvalidQueryError("multipart boundary must be 1 to 70 characters", "boundary")
        self._delimiter = _CRLF + b"--" + boundary.encode("latin-1")
        self._buffer = bytearray(_CRLF)  # the first delimiter may open the body without a CRLF
        self._state = _PREAMBLE
        self.parts = 0

    @property
    def complete(self) -> bool:
        """Whether the closing delimiter was seen."""
        return self._state == _DONE

    def feed(self, data: bytes) -> list[Event]:
        """Consume ``data`` and return the events it completes."""
        if self._state == _DONE:
            return []  # epilogue: ignored (RFC 2046 §5.1.1)
        self._buffer += data
        events: list[Event] = []
        while True:
            if self._state in (_PREAMBLE, _BODY):
                index = self._buffer.find(self._delimiter)
                if index < 0:
                    keep = len(self._delimiter) - 1
                    if self._state == _BODY and len(self._buffer) > keep:
                        events.append(PartData(bytes(self._buffer[:-keep])))
                        del self._buffer[:-keep]
                    elif self._state == _PREAMBLE and len(self._buffer) > keep:
                        del self._buffer[:-keep]
                    return events
                if self._state == _BODY:
                    if index:
                        events.append(PartData(bytes(self._buffer[:index])))
                    events.append(PartEnd())
                del self._buffer[: index + len(self._delimiter)]
                self._state = _AFTER_DELIMITER
            elif self._state == _AFTER_DELIMITER:
                if self._buffer.startswith(b"--"):  # close delimiter; its CRLF is optional
                    self._state = _DONE
                    self._buffer.clear()
                    return events
                line_end = self._buffer.find(_CRLF)
                if line_end < 0:
                    if len(self._buffer) > _MAX_HEADER_BYTES:
                        raise InvalidQueryError("malformed multipart delimiter line", "body")
                    return events
                if self._buffer[:line_end].strip(b" \t"):
                    raise InvalidQueryError("malformed multipart delimiter line", "body")
                del self._buffer[: line_end + 2]
                self._state = _HEADERS
            else:  # _HEADERS
                end = self._buffer.find(_CRLF + _CRLF)
                if self._buffer.startswith(_CRLF):
                    end, skip = 0, 2
                else:
                    skip = 4
                if end < 0:
                    if len(self._buffer) > _MAX_HEADER_BYTES:
                        raise InvalidQueryError("multipart part headers are too long", "body")
                    return events
                if end > _MAX_HEADER_BYTES:
                    raise InvalidQueryError("multipart part headers are too long", "body")
                events.append(PartStart(_parse_headers(bytes(self._buffer[:end]))))
                self.parts += 1
                del self._buffer[: end + skip]
                self._state = _BODY

    def close(self) -> None:
        """Declare the end of the body.

        Raises
        ------
        InvalidQueryError
            The closing delimiter was never seen (truncated body) or there was no part at all.
        """
        if self._state != _DONE:
            raise InvalidQueryError(
                "the multipart body is truncated: its closing boundary is missing", "body"
            )


def _parse_headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.decode("latin-1").split("\r\n"):
        if not line.strip():
            continue
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise InvalidQueryError(f"malformed part header line {line[:60]!r}", "body")
        headers[name.strip().lower()] = value.strip()
    return headers
