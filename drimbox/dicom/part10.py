"""DICOM Part 10 files and encoded data sets, read header-only.

Received data sets are stored as received: :func:`encode_file_meta` builds the preamble and File
Meta Information (PS3.10 §7.1) that are written in front of the raw bytes, and
:func:`read_data_set_header` parses everything but the pixel data, after checking the data set's
structure (every element and item fits in the received bytes, PS3.5 §7), so a truncated data set
is refused without decoding its pixel data.
"""

from __future__ import annotations

import dataclasses
import io
import struct
import tempfile
import zlib
from dataclasses import dataclass
from typing import BinaryIO

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import _read_file_meta_info, read_dataset
from pydicom.tag import BaseTag
from pydicom.uid import UID

from drimbox.dicom._header import NotHandledError, read_little_endian_header
from drimbox.errors import InstanceTooLargeError, UnreadableInstanceError

__all__ = [
    "DICM_PREFIX",
    "DRIMBOX_IMPLEMENTATION_CLASS_UID",
    "DRIMBOX_IMPLEMENTATION_VERSION_NAME",
    "PIXEL_DATA_TAGS",
    "PREAMBLE_LENGTH",
    "DataSetHeader",
    "PixelDataElement",
    "encode_file_meta",
    "read_data_set_header",
    "read_file_meta",
]

PREAMBLE_LENGTH = 128
"""Length of the File Preamble (PS3.10 §7.1)."""

DICM_PREFIX = b"DICM"
"""The DICOM Prefix following the preamble (PS3.10 §7.1)."""

DRIMBOX_IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.10.1337.1.1"
"""Implementation Class UID (0002,0012) written in the File Meta Information of stored files."""

DRIMBOX_IMPLEMENTATION_VERSION_NAME = "DRIMBOX_010"
"""Implementation Version Name (0002,0013), at most 16 characters (VR SH)."""

PIXEL_DATA_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})
"""Pixel Data, Float Pixel Data and Double Float Pixel Data (PS3.3 §C.7.6.3)."""

_UNDEFINED_LENGTH = 0xFFFFFFFF  # PS3.5 §7.1.1
_ITEM_TAG = 0xFFFEE000  # PS3.5 §7.5
_ITEM_DELIMITATION_TAG = 0xFFFEE00D
_SEQUENCE_DELIMITATION_TAG = 0xFFFEE0DD
_FILE_META_GROUP_LENGTH_TAG = 0x00020000
# VRs with a 2-byte reserved field and a 4-byte length in explicit VR (PS3.5 §7.1.2, Table 7.1-1).
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_MAX_NESTING = 64
_PIXEL_DATA_TAG = BaseTag(0x7FE00010)
_INFLATE_IN_MEMORY_BYTES = 16 << 20  # larger inflated data sets spill to a temporary file
_ONE_PASS_MAX_BYTES = 8 << 20  # larger data sets (not in memory already) are read as streams


@dataclass(frozen=True, slots=True)
class PixelDataElement:
    """Where the pixel data element of a data set is.

    Attributes
    ----------
    tag
        Its tag (Pixel Data, Float Pixel Data or Double Float Pixel Data).
    vr
        Its VR (``OW`` when implicit VR, PS3.5 §A.1).
    value_offset
        Offset of its value (of the Basic Offset Table item when encapsulated) from the start
        of the encoded data set; ``None`` for a deflated data set.
    encapsulated
        Whether the value is a sequence of fragments (PS3.5 §A.4).
    """

    tag: int
    vr: str
    value_offset: int | None
    encapsulated: bool


@dataclass(frozen=True, slots=True)
class DataSetHeader:
    """A data set parsed without its pixel data.

    Attributes
    ----------
    dataset
        Every element but the pixel data (elements after the pixel data included).
    pixel_data
        The pixel data element, or ``None`` when the data set has none.
    """

    dataset: Dataset
    pixel_data: PixelDataElement | None


def encode_file_meta(sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str) -> bytes:
    """Return the preamble, prefix and File Meta Information of a Part 10 file (PS3.10 §7.1).

    Encoded directly (explicit VR little endian, PS3.10 §7.1): this runs once per received
    instance, and building it through pydicom costs more than the rest of the header work.

    Parameters
    ----------
    sop_class_uid, sop_instance_uid
        Media Storage SOP Class/Instance UID (from the C-STORE command).
    transfer_syntax_uid
        Transfer syntax of the data set that follows.

    Returns
    -------
    bytes
        128-byte preamble, ``DICM`` and the group 0002 elements.
    """
    elements = b"".join(
        (
            _meta_element(0x0001, b"OB", _FILE_META_INFORMATION_VERSION),
            _meta_element(0x0002, b"UI", _uid_value(sop_class_uid)),
            _meta_element(0x0003, b"UI", _uid_value(sop_instance_uid)),
            _meta_element(0x0010, b"UI", _uid_value(transfer_syntax_uid)),
            _meta_element(0x0012, b"UI", _uid_value(DRIMBOX_IMPLEMENTATION_CLASS_UID)),
            _meta_element(0x0013, b"SH", _text_value(DRIMBOX_IMPLEMENTATION_VERSION_NAME)),
        )
    )
    group_length = _meta_element(0x0000, b"UL", struct.pack("<I", len(elements)))
    return _PREAMBLE_AND_PREFIX + group_length + elements


_PREAMBLE_AND_PREFIX = b"\x00" * PREAMBLE_LENGTH + DICM_PREFIX
_FILE_META_INFORMATION_VERSION = b"\x00\x01"  # (0002,0001), PS3.10 §7.1


def _uid_value(uid: str) -> bytes:
    value = uid.encode("ascii")
    return value + b"\x00" if len(value) % 2 else value  # UI pads with NUL (PS3.5 §6.2)


def _text_value(text: str) -> bytes:
    value = text.encode("ascii")
    return value + b" " if len(value) % 2 else value


def _meta_element(element: int, vr: bytes, value: bytes) -> bytes:
    if vr in _LONG_VRS:
        return struct.pack("<HH2s2xI", 0x0002, element, vr, len(value)) + value
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


def read_file_meta(stream: BinaryIO) -> tuple[FileMetaDataset, int]:
    """Read the preamble and File Meta Information of a Part 10 file.

    Parameters
    ----------
    stream
        Positioned at the start of the file.

    Returns
    -------
    tuple of FileMetaDataset and int
        The file meta elements, and the offset of the data set that follows them.

    Raises
    ------
    UnreadableInstanceError
        When the preamble, the ``DICM`` prefix, or the File Meta Information is missing or
        malformed, or when it has no Transfer Syntax UID.
    """
    start = stream.tell()
    head = stream.read(PREAMBLE_LENGTH + len(DICM_PREFIX) + 12)
    if len(head) < PREAMBLE_LENGTH + 16 or head[PREAMBLE_LENGTH : PREAMBLE_LENGTH + 4] != (
        DICM_PREFIX
    ):
        raise UnreadableInstanceError(
            "not a DICOM Part 10 file: no 128-byte preamble followed by 'DICM' (PS3.10 §7.1)"
        )
    group_length_element = head[PREAMBLE_LENGTH + 4 :]
    tag_group, tag_element, vr = struct.unpack("<HH2s", group_length_element[:6])
    if (tag_group << 16 | tag_element) != _FILE_META_GROUP_LENGTH_TAG or vr != b"UL":
        raise UnreadableInstanceError(
            "File Meta Information does not start with (0002,0000) File Meta Information "
            "Group Length (PS3.10 §7.1)"
        )
    (group_length,) = struct.unpack("<I", group_length_element[8:12])
    data_set_offset = stream.tell() + group_length - start
    stream.seek(start + PREAMBLE_LENGTH + len(DICM_PREFIX))
    try:
        meta = _read_file_meta_info(stream)
    except (InvalidDicomError, EOFError, ValueError, struct.error) as error:
        raise UnreadableInstanceError(f"File Meta Information is malformed: {error}") from error
    if "TransferSyntaxUID" not in meta:
        raise UnreadableInstanceError(
            "File Meta Information has no Transfer Syntax UID (0002,0010)"
        )
    stream.seek(start + data_set_offset)
    return meta, data_set_offset


def read_data_set_header(
    stream: BinaryIO, transfer_syntax_uid: str, *, max_inflated_bytes: int
) -> DataSetHeader:
    """Parse an encoded data set without its pixel data.

    The structure is checked first (every element, item and fragment lies within the bytes
    received; delimiters are present), then the elements before the pixel data are parsed with
    pydicom; the pixel data value is skipped, never decoded. A little endian data set held in
    memory (an ``io.BytesIO``), or small enough to be read into memory, is checked and parsed
    in one pass (:mod:`drimbox.dicom._header`) with the same result.

    Parameters
    ----------
    stream
        Seekable, positioned at the first byte of the data set; its end is the data set's end.
    transfer_syntax_uid
        The transfer syntax the data set is encoded in.
    max_inflated_bytes
        Largest inflated size accepted for a deflated transfer syntax.

    Returns
    -------
    DataSetHeader

    Raises
    ------
    UnreadableInstanceError
        Truncated, malformed, or in an encoding that does not match the transfer syntax.
    InstanceTooLargeError
        A deflated data set that inflates beyond ``max_inflated_bytes``.
    """
    syntax = _KNOWN_SYNTAXES.get(transfer_syntax_uid) or _transfer_syntax(transfer_syntax_uid)
    if not syntax.is_transfer_syntax:
        raise UnreadableInstanceError(f"transfer syntax {transfer_syntax_uid!r} is not known")
    if syntax.is_deflated:
        with tempfile.SpooledTemporaryFile(max_size=_INFLATE_IN_MEMORY_BYTES) as inflated:
            _inflate(stream, inflated, max_inflated_bytes)  # type: ignore[arg-type]
            header = _read_header(inflated, syntax, 0)  # type: ignore[arg-type]
        return DataSetHeader(
            dataset=header.dataset,
            pixel_data=None
            if header.pixel_data is None
            else dataclasses.replace(header.pixel_data, value_offset=None),
        )
    if syntax.is_little_endian:
        in_one_pass = _read_header_in_one_pass(stream, syntax)
        if in_one_pass is not None:
            return in_one_pass
    return _read_header(stream, syntax, stream.tell())


_KNOWN_SYNTAXES: dict[str, UID] = {}


def _transfer_syntax(transfer_syntax_uid: str) -> UID:
    """The UID (remembered when it is a known transfer syntax: a bounded set)."""
    syntax = UID(transfer_syntax_uid)
    if syntax.is_transfer_syntax:
        _KNOWN_SYNTAXES[transfer_syntax_uid] = syntax
    return syntax


def _read_header_in_one_pass(stream: BinaryIO, syntax: UID) -> DataSetHeader | None:
    """Parse with :func:`read_little_endian_header`; ``None`` if the generic reader must."""
    start = stream.tell()
    if isinstance(stream, io.BytesIO):
        data, origin = stream.getvalue(), 0  # no copy: the buffer is shared
    else:
        end = stream.seek(0, io.SEEK_END)
        stream.seek(start)
        if end - start > _ONE_PASS_MAX_BYTES:
            return None
        data, origin = stream.read(end - start), start
    try:
        found = read_little_endian_header(
            data, start - origin, implicit=syntax.is_implicit_VR, stream=stream, origin=origin
        )
    except NotHandledError:
        stream.seek(start)
        return None
    if found.pixel_data is None:
        return DataSetHeader(dataset=found.dataset, pixel_data=None)
    pixel = found.pixel_data
    element = PixelDataElement(
        tag=pixel.tag,
        vr=pixel.vr,
        value_offset=pixel.value_offset - (start - origin),
        encapsulated=pixel.encapsulated,
    )
    return DataSetHeader(dataset=found.dataset, pixel_data=element)


def _read_header(stream: BinaryIO, syntax: UID, base: int) -> DataSetHeader:
    implicit, little = syntax.is_implicit_VR, syntax.is_little_endian
    end = stream.seek(0, io.SEEK_END)
    stream.seek(base)
    walker = _StructureWalker(stream, implicit=implicit, little=little, end=end)
    try:
        pixel = walker.walk_top_level(base)
    except (struct.error, ValueError) as error:
        raise UnreadableInstanceError(f"data set is malformed: {error}") from error
    stream.seek(base)
    try:
        dataset = read_dataset(stream, implicit, little, stop_when=_at_pixel_data)
        if pixel is not None and pixel.after_offset < end:
            stream.seek(pixel.after_offset)
            trailing = read_dataset(stream, implicit, little)
            dataset.update(trailing)
    except (EOFError, ValueError, NotImplementedError, KeyError) as error:
        raise UnreadableInstanceError(f"data set cannot be parsed: {error}") from error
    if pixel is None:
        return DataSetHeader(dataset=dataset, pixel_data=None)
    element = PixelDataElement(
        tag=pixel.tag,
        vr=pixel.vr,
        value_offset=pixel.value_offset - base,
        encapsulated=pixel.encapsulated,
    )
    return DataSetHeader(dataset=dataset, pixel_data=element)


def _at_pixel_data(tag: BaseTag, vr: str | None, length: int) -> bool:
    return int(tag) in PIXEL_DATA_TAGS


def _inflate(stream: BinaryIO, output: BinaryIO, max_inflated_bytes: int) -> None:
    """Inflate a Deflated Explicit VR Little Endian data set (PS3.5 §A.5), bounded in size."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        while chunk := stream.read(1 << 20):
            output.write(inflater.decompress(chunk, max(1, max_inflated_bytes + 1 - output.tell())))
            if output.tell() > max_inflated_bytes or inflater.unconsumed_tail:
                raise InstanceTooLargeError(
                    f"deflated data set inflates beyond the {max_inflated_bytes}-byte limit"
                )
        output.write(inflater.flush())
    except zlib.error as error:
        raise UnreadableInstanceError(f"deflated data set cannot be inflated: {error}") from error
    output.seek(0)


@dataclass(frozen=True, slots=True)
class _PixelDataPosition:
    tag: int
    vr: str
    value_offset: int
    after_offset: int
    encapsulated: bool


class _StructureWalker:
    """Walks the element/item structure of an encoded data set, reading headers only."""

    def __init__(self, stream: BinaryIO, *, implicit: bool, little: bool, end: int) -> None:
        self._stream = stream
        self._implicit = implicit
        self._prefix = "<" if little else ">"
        self._end = end

    def _read(self, size: int) -> bytes:
        data = self._stream.read(size)
        if len(data) != size:
            raise ValueError(f"truncated at byte {self._stream.tell()}: element header cut short")
        return data

    def _skip(self, length: int, what: str) -> None:
        position = self._stream.tell()
        if position + length > self._end:
            raise ValueError(
                f"truncated: {what} at byte {position} needs {length} bytes, "
                f"{self._end - position} remain"
            )
        self._stream.seek(position + length)

    def _tag(self, prefix: str) -> int:
        group, element = struct.unpack(prefix + "HH", self._read(4))
        return int(group) << 16 | int(element)

    def _element_header(self, prefix: str, implicit: bool) -> tuple[int, bytes | None, int]:
        tag = self._tag(prefix)
        if tag >> 16 == 0xFFFE or implicit:
            (length,) = struct.unpack(prefix + "I", self._read(4))
            return tag, None, int(length)
        vr = self._read(2)
        if vr in _LONG_VRS:
            (length,) = struct.unpack(prefix + "2xI", self._read(6))
        elif vr.isalpha() and vr.isupper():
            (length,) = struct.unpack(prefix + "H", self._read(2))
        else:
            raise ValueError(f"invalid VR {vr!r} at byte {self._stream.tell() - 2}")
        return tag, vr, int(length)

    def walk_top_level(self, start: int) -> _PixelDataPosition | None:
        pixel: _PixelDataPosition | None = None
        self._stream.seek(start)
        while self._stream.tell() < self._end:
            element_start = self._stream.tell()
            tag, vr, length = self._element_header(self._prefix, self._implicit)
            if tag in PIXEL_DATA_TAGS and pixel is None:
                value_offset = self._stream.tell()
                encapsulated = length == _UNDEFINED_LENGTH
                if encapsulated:
                    self._walk_fragments()
                else:
                    self._skip(length, f"element {tag:08X}")
                pixel = _PixelDataPosition(
                    tag=tag,
                    vr=(vr or b"OW").decode("ascii"),
                    value_offset=value_offset,
                    after_offset=self._stream.tell(),
                    encapsulated=encapsulated,
                )
            elif tag >> 16 == 0xFFFE:
                raise ValueError(f"unexpected item or delimiter at byte {element_start}")
            else:
                self._walk_value(tag, vr, length, self._prefix, self._implicit, depth=0)
        return pixel

    def _walk_value(
        self, tag: int, vr: bytes | None, length: int, prefix: str, implicit: bool, depth: int
    ) -> None:
        if length != _UNDEFINED_LENGTH:
            self._skip(length, f"element {tag:08X}")
            return
        if depth > _MAX_NESTING:
            raise ValueError("sequences nested too deeply")
        if vr == b"UN":
            # An undefined-length UN holds an implicit VR little endian sequence (PS3.5 §6.2.2).
            prefix, implicit = "<", True
        elif vr not in (None, b"SQ"):
            raise ValueError(f"element {tag:08X} with VR {vr!r} has an undefined length")
        self._walk_items(prefix, implicit, depth)

    def _walk_items(self, prefix: str, implicit: bool, depth: int) -> None:
        while True:
            tag = self._tag(prefix)
            (length,) = struct.unpack(prefix + "I", self._read(4))
            if tag == _SEQUENCE_DELIMITATION_TAG:
                return
            if tag != _ITEM_TAG:
                raise ValueError(f"expected an item in a sequence, found tag {tag:08X}")
            if length != _UNDEFINED_LENGTH:
                self._skip(int(length), "sequence item")
                continue
            while True:
                tag, vr, element_length = self._element_header(prefix, implicit)
                if tag == _ITEM_DELIMITATION_TAG:
                    break
                self._walk_value(tag, vr, element_length, prefix, implicit, depth + 1)

    def _walk_fragments(self) -> None:
        while True:
            tag = self._tag(self._prefix)
            (length,) = struct.unpack(self._prefix + "I", self._read(4))
            if tag == _SEQUENCE_DELIMITATION_TAG:
                return
            if tag != _ITEM_TAG or length == _UNDEFINED_LENGTH:
                raise ValueError(f"malformed encapsulated pixel data: tag {tag:08X}")
            self._skip(int(length), "pixel data fragment")
