"""What the index keeps about an instance: indexed attribute values and DICOM JSON metadata.

The metadata is computed once, at ingest, from the header parse (the pixel data is never read),
and served as-is by WADO-RS ``/metadata`` (PS3.18 §10.4.1.1.2). Bulk data (the pixel data, and
binary values larger than :data:`BULK_DATA_THRESHOLD` bytes) appear as ``BulkDataURI``
(PS3.18 §F.2.6) of the form::

    {+base}/studies/<study>/series/<series>/instances/<sop>/bulkdata/<path>

where ``{+base}`` is :data:`BULKDATA_BASE_PLACEHOLDER`, replaced by the DICOMweb layer with
the request's base URL (a plain string replace on the stored JSON text), and ``<path>`` is the
element's tag as 8 upper-case hex digits, prefixed for an element nested in sequences by
``<sequence tag>/<item index>/`` for each enclosing sequence (e.g. ``00540016/0/00181078``).
"""

from __future__ import annotations

import base64
import struct
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from drimbox.dicom.attributes import INDEXED_ATTRIBUTES
from drimbox.dicom.part10 import PixelDataElement
from drimbox.model import DicomJson

__all__ = [
    "BULKDATA_BASE_PLACEHOLDER",
    "BULK_DATA_THRESHOLD",
    "bulk_data_uri",
    "indexed_attribute_values",
    "instance_metadata",
]

BULKDATA_BASE_PLACEHOLDER = "{+base}"
"""Stands for the DICOMweb base URL in stored ``BulkDataURI`` values; replaced at serve time."""

BULK_DATA_THRESHOLD = 1024
"""Binary values (OB, OD, OF, OL, OV, OW, UN) longer than this many bytes become bulk data."""

_VALUE_SEPARATOR = "\\"  # PS3.5 §6.4, value multiplicity


def bulk_data_uri(
    study_instance_uid: str, series_instance_uid: str, sop_instance_uid: str, path: str
) -> str:
    """Return the stored ``BulkDataURI`` of the bulk data at ``path`` in an instance.

    Parameters
    ----------
    study_instance_uid, series_instance_uid, sop_instance_uid
        The instance.
    path
        The element's tag as 8 hex digits, prefixed by ``<sequence tag>/<item index>/`` for
        each enclosing sequence.

    Returns
    -------
    str
        A URI starting with :data:`BULKDATA_BASE_PLACEHOLDER`.
    """
    return (
        f"{BULKDATA_BASE_PLACEHOLDER}/studies/{study_instance_uid}/series/{series_instance_uid}"
        f"/instances/{sop_instance_uid}/bulkdata/{path}"
    )


def instance_metadata(
    dataset: Dataset,
    *,
    study_instance_uid: str,
    series_instance_uid: str,
    sop_instance_uid: str,
    pixel_data: PixelDataElement | None,
) -> DicomJson:
    """Return the DICOM JSON metadata of an instance (PS3.18 §F.2), bulk data as URIs.

    Parameters
    ----------
    dataset
        The data set without its pixel data (as parsed by
        :func:`drimbox.dicom.part10.read_data_set_header`); no File Meta Information.
    study_instance_uid, series_instance_uid, sop_instance_uid
        The instance's identity (already validated), used in the bulk data URIs.
    pixel_data
        The pixel data element, added as a ``BulkDataURI`` when present.

    Returns
    -------
    DicomJson
        Keys are upper-case 8-hex-digit tags in ascending order.
    """
    base = bulk_data_uri(study_instance_uid, series_instance_uid, sop_instance_uid, "")
    try:
        document = _FastEncoder(base).dataset(dataset, "", _codec(dataset, "latin_1"))
    except _UnsupportedError:  # e.g. ISO 2022 character sets: let pydicom do all of it
        document = _pydicom_json(dataset, base)
    if pixel_data is not None:
        tag = f"{pixel_data.tag:08X}"
        document[tag] = {
            "vr": pixel_data.vr,
            "BulkDataURI": bulk_data_uri(
                study_instance_uid, series_instance_uid, sop_instance_uid, tag
            ),
        }
    return dict(sorted(document.items()))


def _pydicom_json(dataset: Dataset, base: str) -> DicomJson:
    paths: dict[int, str] = {}
    _collect_paths(dataset, "", paths)

    def bulk_data_element_handler(element: DataElement) -> str:
        return base + paths.get(id(element), f"{int(element.tag):08X}")

    document: DicomJson = dataset.to_json_dict(
        bulk_data_threshold=BULK_DATA_THRESHOLD,
        bulk_data_element_handler=bulk_data_element_handler,
        suppress_invalid_tags=True,
    )
    return document


def _collect_paths(dataset: Dataset, prefix: str, paths: dict[int, str]) -> None:
    """Record the bulk data path of every element, by object identity.

    Iterating a data set converts its raw elements and keeps the converted ones, so the
    elements seen here are the very objects ``to_json_dict`` hands to the bulk data handler.
    """
    for element in dataset:
        path = f"{prefix}{int(element.tag):08X}"
        paths[id(element)] = path
        if element.VR == "SQ":
            for index, item in enumerate(element.value):
                _collect_paths(item, f"{path}/{index}/", paths)


def indexed_attribute_values(metadata: DicomJson) -> dict[str, str | None]:
    """Return every indexed attribute (:data:`INDEXED_ATTRIBUTES`) in its DICOM string form.

    Parameters
    ----------
    metadata
        The instance's DICOM JSON (:func:`instance_metadata`).

    Returns
    -------
    dict
        By pydicom keyword: ``None`` when absent, ``""`` when present but empty, else the
        value as DICOM text (PN ``Family^Given``, DA ``YYYYMMDD``, numbers as decimal text,
        multiple values joined with ``\\``).
    """
    values: dict[str, str | None] = {}
    for keyword, tag in _INDEXED_TAGS:
        element = metadata.get(tag)
        if element is None:
            values[keyword] = None
            continue
        found = element.get("Value")
        if not found:
            values[keyword] = ""
        elif len(found) == 1 and type(found[0]) is str:  # the common case, as _text gives it
            values[keyword] = found[0]
        else:
            values[keyword] = _VALUE_SEPARATOR.join(map(_text, found))
    return values


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):  # PN (PS3.18 §F.2.2)
        groups = [value.get(g, "") for g in ("Alphabetic", "Ideographic", "Phonetic")]
        while groups and not groups[-1]:
            groups.pop()
        return "=".join(groups)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


_INDEXED_TAGS = tuple(
    (keyword, f"{tag_for_keyword(keyword):08X}")
    for keywords in INDEXED_ATTRIBUTES.values()
    for keyword in keywords
)


# -- DICOM JSON straight from the encoded values ------------------------------------------------
#
# pydicom's ``to_json_dict`` converts every element through its value classes (about 25 µs an
# element here), which made the metadata the costliest step of ingest. The encoder below builds
# the same JSON (checked against pydicom in tests/unit/test_metadata.py) from the raw values for
# the common VRs and character sets, and hands anything else to pydicom, element by element.

_CODECS = {"": "latin_1", "ISO_IR 6": "latin_1", "ISO_IR 100": "latin_1", "ISO_IR 192": "utf_8"}
_PADDING = "\x00 "
_ASCII_STRING_VRS = frozenset({"AS", "CS", "DA", "DT", "TM", "UI"})
_TEXT_VRS = frozenset({"LO", "SH"})
_SINGLE_TEXT_VRS = frozenset({"LT", "ST", "UT"})
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW"})
_NUMBER_FORMATS = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d"}
_NUMBER_FORMATS.update({"UV": "Q", "SV": "q"})
_INLINE_LIMIT = (BULK_DATA_THRESHOLD // 4) * 3  # pydicom's rule: base64 adds a third
_SPECIFIC_CHARACTER_SET = 0x00080005


class _UnsupportedError(Exception):
    """The fast encoder cannot represent this data set; pydicom takes over."""


def _dictionary_vr(tag: int) -> str:
    """The VR of an implicit VR element (``UN`` when unknown or ambiguous: pydicom decides)."""
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return "UN"


def _codec(dataset: Dataset, inherited: str) -> str:
    if _SPECIFIC_CHARACTER_SET not in dataset:
        return inherited
    raw = dataset.get_item(_SPECIFIC_CHARACTER_SET).value
    text = raw.decode("latin_1") if isinstance(raw, bytes) else str(raw or "")
    codec = _CODECS.get(text.strip(_PADDING))
    if codec is None:
        raise _UnsupportedError(text)
    return codec


# What the encoder does with each VR's raw value (an ``int`` per kind, dispatched in one loop).
_ASCII, _TEXT, _SINGLE_TEXT, _BINARY, _NUMBER, _INTEGER_STRING, _DECIMAL_STRING, _PERSON_NAME = (
    range(8)
)
_KINDS = {vr: _ASCII for vr in _ASCII_STRING_VRS}
_KINDS.update({vr: _TEXT for vr in _TEXT_VRS})
_KINDS.update({vr: _SINGLE_TEXT for vr in _SINGLE_TEXT_VRS})
_KINDS.update({vr: _BINARY for vr in _BINARY_VRS})
_KINDS.update({vr: _NUMBER for vr in _NUMBER_FORMATS})
_KINDS.update({"IS": _INTEGER_STRING, "DS": _DECIMAL_STRING, "PN": _PERSON_NAME})
_NUMBER_SIZES = {vr: struct.calcsize(code) for vr, code in _NUMBER_FORMATS.items()}
_FLOAT_VRS = frozenset({"FL", "FD"})
_MEMO_LIMIT = 1 << 16  # tags remembered (their text, their dictionary VR): bounded memory
_TAG_TEXTS: dict[int, str] = {}
_DICTIONARY_VRS: dict[int, str] = {}
_FALLBACK_ERRORS = (_UnsupportedError, ValueError, UnicodeDecodeError, struct.error)


def _tag_text(tag: int) -> str:
    """The tag as 8 upper-case hex digits (PS3.18 §F.2.1.1), remembered."""
    text = _TAG_TEXTS.get(tag)
    if text is None:
        text = f"{tag:08X}"
        if len(_TAG_TEXTS) < _MEMO_LIMIT:
            _TAG_TEXTS[tag] = text
    return text


def _implicit_vr(tag: int) -> str:
    """:func:`_dictionary_vr`, remembered."""
    vr = _DICTIONARY_VRS.get(tag)
    if vr is None:
        vr = _dictionary_vr(tag)
        if len(_DICTIONARY_VRS) < _MEMO_LIMIT:
            _DICTIONARY_VRS[tag] = vr
    return vr


class _FastEncoder:
    def __init__(self, base: str) -> None:
        self._base = base

    def dataset(self, dataset: Dataset, prefix: str, codec: str) -> DicomJson:
        document: DicomJson = {}
        for tag, element in dataset.items():
            number = int(tag)  # plain int keys: a BaseTag key compares in Python
            key = _TAG_TEXTS.get(number) or _tag_text(number)
            vr = element.VR or _DICTIONARY_VRS.get(number) or _implicit_vr(number)
            value = element.value
            kind = _KINDS.get(vr)
            if kind is None or not (value is None or isinstance(value, bytes)):
                if vr == "SQ":
                    document[key] = self._sequence(dataset, tag, prefix + key, codec)
                else:
                    document[key] = self._pydicom_element(dataset, element, prefix + key)
                continue
            try:
                document[key] = self._value(kind, vr, value or b"", codec, element, prefix, key)
            except _FALLBACK_ERRORS:
                document[key] = self._pydicom_element(dataset, element, prefix + key)
        return document

    def _sequence(self, dataset: Dataset, tag: int, path: str, codec: str) -> DicomJson:
        sequence = dataset[tag].value  # parsed by pydicom (nested raw items)
        items = [
            self.dataset(item, f"{path}/{number}/", _codec(item, codec))
            for number, item in enumerate(sequence)
        ]
        return {"vr": "SQ", "Value": items}

    def _value(
        self, kind: int, vr: str, raw: bytes, codec: str, element: Any, prefix: str, key: str
    ) -> DicomJson:
        if kind == _BINARY:
            if not raw:
                return {"vr": vr}
            if len(raw) > _INLINE_LIMIT:
                return {"vr": vr, "BulkDataURI": self._base + prefix + key}
            return {"vr": vr, "InlineBinary": base64.b64encode(raw).decode("ascii")}
        if kind == _NUMBER:
            size = _NUMBER_SIZES[vr]
            if len(raw) % size:
                raise _UnsupportedError(vr)
            if not raw:
                return {"vr": vr}
            order = "<" if element.is_little_endian else ">"
            numbers = struct.unpack(f"{order}{len(raw) // size}{_NUMBER_FORMATS[vr]}", raw)
            if vr in _FLOAT_VRS:
                return {"vr": vr, "Value": [float(number) for number in numbers]}
            return {"vr": vr, "Value": list(numbers)}
        if kind == _SINGLE_TEXT:
            text = raw.decode(codec).rstrip(_PADDING)
            return {"vr": vr, "Value": [text]} if text else {"vr": vr}
        if kind == _TEXT:
            parts = [part.decode(codec).rstrip(_PADDING) for part in raw.split(b"\\")]
            return {"vr": vr, "Value": parts} if parts != [""] else {"vr": vr}
        text = raw.decode(codec if kind == _PERSON_NAME else "latin_1").rstrip(_PADDING)
        if not text:
            return {"vr": vr}
        parts = text.split("\\")
        if kind == _ASCII:
            return {"vr": vr, "Value": parts}
        if kind == _INTEGER_STRING:
            return {"vr": vr, "Value": [int(part) for part in parts]}
        if kind == _DECIMAL_STRING:
            return {"vr": vr, "Value": [float(part) for part in parts]}
        if "=" not in text:
            return {"vr": vr, "Value": [{"Alphabetic": part} for part in parts]}
        raise _UnsupportedError(vr)

    def _pydicom_element(self, dataset: Dataset, element: Any, path: str) -> DicomJson:
        converted = dataset[element.tag]  # converts (and keeps) the element

        def handler(_: DataElement) -> str:
            return self._base + path

        result: DicomJson = converted.to_json_dict(handler, BULK_DATA_THRESHOLD)
        return result
