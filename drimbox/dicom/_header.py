"""One-pass header reader for little endian data sets held in memory (the common case).

:func:`drimbox.dicom.part10.read_data_set_header` first walks a data set's structure, then
parses it with pydicom's generic, stream-based reader: two passes of per-element ``read``
calls, about half of the CPU time of an ingest outside the index. For the transfer syntaxes
almost every sender uses (implicit and explicit VR little endian and the encapsulated ones, all
little endian, PS3.5 §A), this module does both in one pass over the bytes, producing the very
same :class:`pydicom.dataset.Dataset` (the same ``RawDataElement`` objects pydicom's reader
yields, undefined-length sequences parsed by pydicom's own :func:`read_sequence`).

It is deliberately partial: on anything unusual (a VR pydicom does not know, an undefined
length that is not a sequence, a second pixel data element, a data set whose first element
looks encoded in the other VR mode, any structural error), it raises :class:`NotHandledError`
and the caller runs the generic reader, which gives the established result or error. So every
check of the generic path stays in force; this path only accepts what that path accepts.
"""

from __future__ import annotations

import struct
from collections.abc import MutableSequence
from typing import BinaryIO, NamedTuple, cast

from pydicom.charset import convert_encodings, default_encoding, python_encoding
from pydicom.datadict import _dictionary_vr_fast
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.dataelem import empty_value_for_VR as _empty_value
from pydicom.dataset import Dataset
from pydicom.filereader import read_sequence
from pydicom.tag import BaseTag
from pydicom.values import convert_string

__all__ = ["HeaderElements", "NotHandledError", "PixelDataSpan", "read_little_endian_header"]

_UNDEFINED_LENGTH = 0xFFFFFFFF  # PS3.5 §7.1.1
_ITEM_TAG = 0xFFFEE000  # PS3.5 §7.5
_ITEM_DELIMITATION_TAG = 0xFFFEE00D
_SEQUENCE_DELIMITATION_TAG = 0xFFFEE0DD
_DELIMITER_GROUP = 0xFFFE
_SPECIFIC_CHARACTER_SET = 0x00080005
_PIXEL_DATA_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})  # PS3.3 §C.7.6.3
_MAX_NESTING = 64
# Explicit VRs (PS3.5 §6.2); those with a 4-byte length (PS3.5 §7.1.2, Table 7.1-1) map to True.
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_SHORT_VRS = frozenset(
    {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"PN"}
    | {b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"}
)
_EXPLICIT_VRS = {vr: (vr.decode("ascii"), vr in _LONG_VRS) for vr in _LONG_VRS | _SHORT_VRS}

# RawDataElement is a NamedTuple: building it with tuple.__new__ skips its Python-level __new__.
_RAW_ELEMENT_FIELDS = (
    "tag", "VR", "length", "value", "value_tell", "is_implicit_VR", "is_little_endian", "is_raw",
    "is_buffered",
)  # fmt: skip
if RawDataElement._fields != _RAW_ELEMENT_FIELDS:  # pragma: no cover - a pydicom upgrade
    raise ImportError(f"pydicom's RawDataElement fields changed: {RawDataElement._fields}")


def _new_raw_element(fields: tuple[object, ...]) -> RawDataElement:
    return tuple.__new__(RawDataElement, fields)


_TAG_LENGTH = struct.Struct("<HHI").unpack_from  # implicit VR header; items and delimiters
_TAG_VR_LENGTH = struct.Struct("<HH2sH").unpack_from  # explicit VR header
_LONG_LENGTH = struct.Struct("<I").unpack_from


class NotHandledError(Exception):
    """This data set needs the generic reader (unusual encoding, or malformed)."""


class PixelDataSpan(NamedTuple):
    """Where the top-level pixel data element is, as offsets into the bytes read."""

    tag: int
    vr: str
    value_offset: int
    after_offset: int
    encapsulated: bool


class HeaderElements(NamedTuple):
    """What :func:`read_little_endian_header` found."""

    dataset: Dataset
    pixel_data: PixelDataSpan | None


def read_little_endian_header(
    data: bytes, start: int, *, implicit: bool, stream: BinaryIO, origin: int
) -> HeaderElements:
    """Parse the little endian data set ``data[start:]``, checking its structure, in one pass.

    Parameters
    ----------
    data
        The bytes; the data set runs from ``start`` to the end.
    start
        Offset of the data set's first byte in ``data``.
    implicit
        Implicit VR little endian (else explicit VR little endian).
    stream
        Holds the same bytes, ``data[0]`` at position ``origin``; undefined-length sequences
        are parsed from it by pydicom.
    origin
        Stream position of ``data[0]`` (element positions are reported in stream positions).

    Returns
    -------
    HeaderElements
        The data set without its pixel data (elements after it included), as pydicom's reader
        builds it, and the pixel data's span (offsets into ``data``).

    Raises
    ------
    NotHandledError
        The generic reader must parse this data set.
    """
    end = len(data)
    reader = _Reader(data, end, implicit, stream, origin)
    elements, position, pixel = reader.segment(start, stop_at_pixel_data=True)
    dataset = _dataset(elements, implicit)
    if pixel is not None and position < end:
        trailing, _, _ = reader.segment(position, stop_at_pixel_data=False)
        dataset.update(_dataset(trailing, implicit))
    return HeaderElements(dataset, pixel)


def _dataset(elements: dict[BaseTag, RawDataElement | DataElement], implicit: bool) -> Dataset:
    """Build the data set as :func:`pydicom.filereader.read_dataset` does."""
    dataset = Dataset(elements, parent_encoding=default_encoding)
    encoding: str | MutableSequence[str] = default_encoding
    charset = elements.get(BaseTag(_SPECIFIC_CHARACTER_SET))
    if isinstance(charset, RawDataElement):
        encoding = _character_set_encodings(charset)
    dataset.set_original_encoding(implicit, True, encoding)
    return dataset


_SINGLE_CHARACTER_SETS = frozenset(python_encoding)  # one defined term, no code extensions
_KNOWN_ENCODINGS: dict[bytes, list[str]] = {}


def _character_set_encodings(charset: RawDataElement) -> list[str]:
    """Python encodings of a Specific Character Set element, as ``read_dataset`` finds them.

    Those of a single known defined term (PS3.3 §C.12.1.1.2) are remembered: their conversion
    is the same every time and warns of nothing; any other value is converted each time.
    """
    raw = charset.value if isinstance(charset.value, bytes) else None
    known = _KNOWN_ENCODINGS.get(raw) if raw is not None else None
    if known is not None:
        return list(known)
    value = convert_raw_data_element(charset).value
    encodings = list(convert_encodings(cast(str | MutableSequence[str] | None, value)))
    if raw is not None and isinstance(value, str) and value in _SINGLE_CHARACTER_SETS:
        _KNOWN_ENCODINGS.setdefault(raw, list(encodings))
    return encodings


class _Reader:
    def __init__(
        self, data: bytes, end: int, implicit: bool, stream: BinaryIO, origin: int
    ) -> None:
        self._data = data
        self._end = end
        self._implicit = implicit
        self._stream = stream
        self._origin = origin

    def segment(
        self, position: int, *, stop_at_pixel_data: bool
    ) -> tuple[dict[BaseTag, RawDataElement | DataElement], int, PixelDataSpan | None]:
        """Read top-level elements from ``position`` to the end, or to the pixel data.

        Returns the elements, the offset where reading stopped (after the pixel data) and the
        pixel data's span.
        """
        data, end, implicit, origin = self._data, self._end, self._implicit, self._origin
        self._check_vr_mode(position)
        elements: dict[BaseTag, RawDataElement | DataElement] = {}
        while position < end:
            if end - position < 8:
                raise NotHandledError("truncated element header")
            if implicit:
                group, number, length = _TAG_LENGTH(data, position)
                vr: str | None = None
                value = position + 8
            else:
                group, number, raw_vr, length = _TAG_VR_LENGTH(data, position)
                known = _EXPLICIT_VRS.get(raw_vr)
                if known is None:
                    raise NotHandledError(f"VR {raw_vr!r}")
                vr, long = known
                if long:
                    if end - position < 12:
                        raise NotHandledError("truncated element header")
                    (length,) = _LONG_LENGTH(data, position + 8)
                    value = position + 12
                else:
                    value = position + 8
            tag = group << 16 | number
            if group == _DELIMITER_GROUP:
                raise NotHandledError("item or delimiter at the top level")
            if tag in _PIXEL_DATA_TAGS:
                if not stop_at_pixel_data:
                    raise NotHandledError("second pixel data element")
                encapsulated = length == _UNDEFINED_LENGTH
                after = self._fragments(value) if encapsulated else value + length
                if after > end:
                    raise NotHandledError("truncated pixel data")
                return elements, after, PixelDataSpan(tag, vr or "OW", value, after, encapsulated)
            if length == _UNDEFINED_LENGTH:
                key = BaseTag(tag)
                elements[key], position = self._sequence(key, vr, value, elements)
                continue
            after = value + length
            if after > end:
                raise NotHandledError("truncated element value")
            raw = data[value:after] if length else cast(bytes | None, _empty_value(vr, raw=True))
            key = BaseTag(tag)
            elements[key] = _new_raw_element(
                (key, vr, length, raw, origin + value, implicit, True, True, False)
            )
            position = after
        return elements, position, None

    def _check_vr_mode(self, position: int) -> None:
        """Refuse what pydicom reads in the other VR mode, with a warning (``read_dataset``)."""
        if self._end - position < 6:
            return
        first, second = self._data[position + 4], self._data[position + 5]
        looks_implicit = not (0x40 < first < 0x5B and 0x40 < second < 0x5B)
        if looks_implicit != self._implicit:
            raise NotHandledError("first element in the other VR mode")

    def _sequence(
        self,
        tag: BaseTag,
        vr: str | None,
        value: int,
        preceding: dict[BaseTag, RawDataElement | DataElement],
    ) -> tuple[DataElement, int]:
        """Check an undefined-length sequence's structure, then parse it with pydicom.

        ``preceding`` are the elements read before it at the same level: their Specific
        Character Set is the sequence's. Returns the element and the offset after its Sequence
        Delimitation Item.
        """
        if vr is None:
            try:
                vr = _dictionary_vr_fast(tag)
            except KeyError:  # a private sequence: pydicom looks for an item (PS3.5 §7.5)
                if self._end - value >= 4 and _TAG_LENGTH(self._data, value)[:2] == (
                    0xFFFE,
                    0xE000,
                ):
                    vr = "SQ"
        if vr != "SQ":
            raise NotHandledError("undefined length element that is not a sequence")
        after = self._items(value, self._implicit, depth=0)
        encoding: str | MutableSequence[str] = default_encoding
        charset = preceding.get(BaseTag(_SPECIFIC_CHARACTER_SET))
        if charset is not None:  # as pydicom's data_element_generator finds it
            encoding = convert_encodings(convert_string(charset.value or b"", True))
        self._stream.seek(self._origin + value)
        sequence = read_sequence(self._stream, self._implicit, True, _UNDEFINED_LENGTH, encoding)
        if self._stream.tell() != self._origin + after:
            raise NotHandledError("sequence read beyond its structure")
        element = DataElement(tag, vr, sequence, self._origin + value, is_undefined_length=True)
        return element, after

    def _header(self, position: int, implicit: bool) -> tuple[int, bytes | None, int, int]:
        """Return the tag, explicit VR, length and value offset of the element at ``position``."""
        data, end = self._data, self._end
        if end - position < 8:
            raise NotHandledError("truncated element header")
        group, number, length = _TAG_LENGTH(data, position)
        if implicit or group == _DELIMITER_GROUP:
            return group << 16 | number, None, length, position + 8
        raw_vr = data[position + 4 : position + 6]
        if raw_vr not in _EXPLICIT_VRS:
            raise NotHandledError(f"VR {raw_vr!r}")
        if raw_vr in _LONG_VRS:
            if end - position < 12:
                raise NotHandledError("truncated element header")
            return group << 16 | number, raw_vr, _LONG_LENGTH(data, position + 8)[0], position + 12
        return group << 16 | number, raw_vr, length >> 16, position + 8

    def _items(self, position: int, implicit: bool, depth: int) -> int:
        """Walk the items of an undefined-length sequence; return the offset after it."""
        if depth > _MAX_NESTING:
            raise NotHandledError("sequences nested too deeply")
        while True:
            tag, _, length, position = self._header(position, True)
            if tag == _SEQUENCE_DELIMITATION_TAG:
                return position
            if tag != _ITEM_TAG:
                raise NotHandledError("not an item in a sequence")
            if length != _UNDEFINED_LENGTH:
                position += length
                if position > self._end:
                    raise NotHandledError("truncated sequence item")
                continue
            while True:
                tag, vr, length, position = self._header(position, implicit)
                if tag == _ITEM_DELIMITATION_TAG:
                    break
                if length != _UNDEFINED_LENGTH:
                    position += length
                    if position > self._end:
                        raise NotHandledError("truncated element value")
                elif vr == b"UN":  # an implicit VR little endian sequence (PS3.5 §6.2.2)
                    position = self._items(position, True, depth + 1)
                elif vr in (None, b"SQ"):
                    position = self._items(position, implicit, depth + 1)
                else:
                    raise NotHandledError("undefined length element that is not a sequence")

    def _fragments(self, position: int) -> int:
        """Walk encapsulated pixel data fragments (PS3.5 §A.4); return the offset after them."""
        while True:
            if self._end - position < 8:
                raise NotHandledError("truncated pixel data fragment")
            group, number, length = _TAG_LENGTH(self._data, position)
            tag = group << 16 | number
            position += 8
            if tag == _SEQUENCE_DELIMITATION_TAG:
                return position
            if tag != _ITEM_TAG or length == _UNDEFINED_LENGTH:
                raise NotHandledError("malformed encapsulated pixel data")
            position += length
