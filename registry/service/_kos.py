"""Read only what the registry checks in a KOS: a bounded walk of the PS3.10 byte stream.

A publish needs three facts from the Key Object Selection Document: its SOP Class UID, its SOP
Instance UID and the StudyInstanceUIDs of its CurrentRequestedProcedureEvidenceSequence
(PS3.3 §C.17.2). Parsing the whole document with pydicom cost ≈ 0.4 ms per publish, most of the
registry's per-request CPU after the HTTP stack; this walk reads the element headers (PS3.5 §7.1)
and skips every value it does not need: ≈ 0.07 ms.

It understands the two uncompressed little-endian transfer syntaxes (explicit and implicit VR),
defined and undefined lengths (PS3.5 §7.5). Anything else — another transfer syntax, a missing
file meta information, a length that runs past the end — returns ``None``: the caller then parses
with pydicom, which either reads it or raises the error the client gets.
"""

from __future__ import annotations

from dataclasses import dataclass
from struct import Struct

__all__ = ["KosFacts", "read_kos_facts"]

#: PS3.10 §7.1: 128-byte preamble, then the "DICM" prefix.
_PREAMBLE_LENGTH = 128
_PREFIX = b"DICM"
_DATASET_START = _PREAMBLE_LENGTH + len(_PREFIX)
#: PS3.5 Annex A.
_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
_IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
#: PS3.5 §7.1.2: explicit VRs with a 2-byte reserved field and a 4-byte length.
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
#: PS3.5 §7.5: undefined length.
_UNDEFINED = 0xFFFFFFFF
#: Tags as (group << 16) | element.
_FILE_META_GROUP = 0x0002
_TRANSFER_SYNTAX_UID = 0x00020010
_SOP_CLASS_UID = 0x00080016
_SOP_INSTANCE_UID = 0x00080018
_STUDY_INSTANCE_UID = 0x0020000D
_EVIDENCE_SEQUENCE = 0x0040A375
#: PS3.5 §7.5: item, item delimitation and sequence delimitation tags.
_ITEM = 0xFFFEE000
_ITEM_DELIMITATION = 0xFFFEE00D
_SEQUENCE_DELIMITATION = 0xFFFEE0DD
#: Deepest nesting of sequences walked (a KOS has three levels; PS3.3 §C.17.6.2).
_MAX_DEPTH = 16

_TAG = Struct("<HH")
_SHORT_LENGTH = Struct("<H")
_LONG_LENGTH = Struct("<I")


class _UnreadableError(Exception):
    """The fast walk cannot read this stream (pydicom will)."""


@dataclass(frozen=True, slots=True)
class KosFacts:
    """The attributes of a KOS the registry rules check."""

    sop_class_uid: str | None
    sop_instance_uid: str | None
    evidence_study_uids: frozenset[str]


@dataclass(slots=True)
class _Element:
    tag: int
    vr: bytes | None  # None in implicit VR
    length: int
    value_offset: int


class _Walker:
    def __init__(self, data: bytes, *, explicit: bool) -> None:
        self.data, self.explicit = data, explicit

    def header(self, offset: int) -> _Element:
        data = self.data
        if offset + 8 > len(data):
            raise _UnreadableError
        group, element = _TAG.unpack_from(data, offset)
        tag = (group << 16) | element
        if group == 0xFFFE or not self.explicit:  # items and delimiters have no VR (§7.5)
            (length,) = _LONG_LENGTH.unpack_from(data, offset + 4)
            return _Element(tag, None, length, offset + 8)
        vr = data[offset + 4 : offset + 6]
        if vr in _LONG_VRS:
            if offset + 12 > len(data):
                raise _UnreadableError
            (length,) = _LONG_LENGTH.unpack_from(data, offset + 8)
            return _Element(tag, vr, length, offset + 12)
        (length,) = _SHORT_LENGTH.unpack_from(data, offset + 6)
        return _Element(tag, vr, length, offset + 8)

    def text(self, element: _Element) -> str:
        end = element.value_offset + element.length
        if element.length == _UNDEFINED or end > len(self.data):
            raise _UnreadableError
        try:
            value = self.data[element.value_offset : end].decode("ascii")
        except UnicodeDecodeError:
            raise _UnreadableError from None
        return value.rstrip("\0 ")

    def skip(self, element: _Element, depth: int) -> int:
        """Return the offset after ``element``'s value."""
        if element.length != _UNDEFINED:
            end = element.value_offset + element.length
            if end > len(self.data):
                raise _UnreadableError
            return end
        if element.vr not in (None, b"SQ", b"UN"):
            raise _UnreadableError  # encapsulated pixel data or a broken stream: not a KOS walk
        return self.sequence_end(element, depth)

    def sequence_end(self, sequence: _Element, depth: int) -> int:
        """Walk a sequence of undefined length; return the offset after its delimiter."""
        if depth > _MAX_DEPTH:
            raise _UnreadableError
        offset = sequence.value_offset
        while True:
            item = self.header(offset)
            if item.tag == _SEQUENCE_DELIMITATION:
                return item.value_offset
            if item.tag != _ITEM:
                raise _UnreadableError
            offset = self.dataset_end(item, depth + 1)

    def dataset_end(self, item: _Element, depth: int) -> int:
        offset = item.value_offset
        end = None if item.length == _UNDEFINED else offset + item.length
        if end is not None and end > len(self.data):
            raise _UnreadableError
        while end is None or offset < end:
            element = self.header(offset)
            if element.tag == _ITEM_DELIMITATION and end is None:
                return element.value_offset
            offset = self.skip(element, depth)
        if offset != end:
            raise _UnreadableError
        return offset

    def study_uid(self, item: _Element, depth: int) -> tuple[str | None, int]:
        """Return an evidence item's StudyInstanceUID and the offset after the item."""
        offset, found = item.value_offset, None
        end = None if item.length == _UNDEFINED else offset + item.length
        while end is None or offset < end:
            element = self.header(offset)
            if element.tag == _ITEM_DELIMITATION and end is None:
                return found, element.value_offset
            if element.tag == _STUDY_INSTANCE_UID:
                found = self.text(element)
            offset = self.skip(element, depth)
        if offset != end:
            raise _UnreadableError
        return found, offset

    def evidence(self, sequence: _Element) -> tuple[set[str], int]:
        offset, studies = sequence.value_offset, set[str]()
        end = None if sequence.length == _UNDEFINED else offset + sequence.length
        if end is not None and end > len(self.data):
            raise _UnreadableError
        while end is None or offset < end:
            item = self.header(offset)
            if item.tag == _SEQUENCE_DELIMITATION and end is None:
                return studies, item.value_offset
            if item.tag != _ITEM:
                raise _UnreadableError
            study, offset = self.study_uid(item, 1)
            if study is not None:
                studies.add(study)
        if offset != end:
            raise _UnreadableError
        return studies, offset


def read_kos_facts(data: bytes) -> KosFacts | None:
    """Return the SOP Class/Instance UIDs and the evidence studies of a PS3.10 file.

    ``None`` when the fast walk cannot read the stream: parse it with pydicom instead.
    """
    if len(data) < _DATASET_START or data[_PREAMBLE_LENGTH:_DATASET_START] != _PREFIX:
        return None
    try:
        return _read(data)
    except (_UnreadableError, ValueError):
        return None


def _read(data: bytes) -> KosFacts | None:
    meta = _Walker(data, explicit=True)  # PS3.10 §7.1: file meta is explicit VR little endian
    offset, transfer_syntax = _DATASET_START, None
    while offset < len(data):
        element = meta.header(offset)
        if element.tag >> 16 != _FILE_META_GROUP:
            break
        if element.tag == _TRANSFER_SYNTAX_UID:
            transfer_syntax = meta.text(element)
        offset = meta.skip(element, 0)
    if transfer_syntax not in (_EXPLICIT_VR_LITTLE_ENDIAN, _IMPLICIT_VR_LITTLE_ENDIAN):
        return None
    walker = _Walker(data, explicit=transfer_syntax == _EXPLICIT_VR_LITTLE_ENDIAN)
    found: dict[int, str] = {}
    studies: set[str] = set()
    while offset < len(data):
        element = walker.header(offset)
        if element.tag >> 16 == 0xFFFE:
            raise _UnreadableError  # a delimiter at the top level
        if element.tag in (_SOP_CLASS_UID, _SOP_INSTANCE_UID):
            found[element.tag] = walker.text(element)
        if element.tag == _EVIDENCE_SEQUENCE:
            if element.vr not in (None, b"SQ"):
                raise _UnreadableError
            studies, offset = walker.evidence(element)
        else:
            offset = walker.skip(element, 0)
    if offset != len(data):
        raise _UnreadableError
    return KosFacts(found.get(_SOP_CLASS_UID), found.get(_SOP_INSTANCE_UID), frozenset(studies))
