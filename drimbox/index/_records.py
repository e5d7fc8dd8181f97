"""From an :class:`drimbox.model.InstanceRecord` to the values stored at each level."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson

from drimbox.dicom.attributes import INDEXED_ATTRIBUTES, PERSON_NAME_ATTRIBUTES
from drimbox.index._dicomjson import VALUE_SEPARATOR
from drimbox.index._query import CASE_FOLDED_SUFFIX, FUZZY_SUFFIX, case_folded, fuzzy_key
from drimbox.model import InstanceRecord, Level

__all__ = [
    "EPOCH",
    "NOT_ISSUED",
    "flat_values",
    "integer_order",
    "level_values",
    "list_with",
    "metadata_text",
    "microseconds",
]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
NOT_ISSUED = ""
"""Stored Patient ID / Issuer of Patient ID when absent (they form a unique key)."""


def microseconds(moment: datetime) -> int:
    """Return microseconds since the Unix epoch (naive datetimes are taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def integer_order(text: str | None) -> int | None:
    """Return the first value of an IS attribute as an integer (for ordering), or ``None``."""
    if not text:
        return None
    try:
        return int(text.split(VALUE_SEPARATOR)[0].strip())
    except ValueError:
        return None


def level_values(record: InstanceRecord, level: Level) -> dict[str, Any]:
    """Return the stored columns of ``level`` for ``record`` (attributes and PN forms).

    The record's identifying fields win over its ``attributes`` for the UIDs.
    """
    values: dict[str, Any] = {}
    for keyword in INDEXED_ATTRIBUTES[level]:
        value = record.attributes.get(keyword)
        values[keyword] = value if value else None
        if keyword in PERSON_NAME_ATTRIBUTES:
            values[keyword + CASE_FOLDED_SUFFIX] = case_folded(values[keyword])
            values[keyword + FUZZY_SUFFIX] = fuzzy_key(values[keyword])
    if level is Level.PATIENT:
        values["PatientID"] = values["PatientID"] or NOT_ISSUED
        values["IssuerOfPatientID"] = values["IssuerOfPatientID"] or NOT_ISSUED
    elif level is Level.STUDY:
        values["StudyInstanceUID"] = record.study_instance_uid
    elif level is Level.SERIES:
        values["SeriesInstanceUID"] = record.series_instance_uid
    else:
        values["SOPInstanceUID"] = record.sop_instance_uid
        values["SOPClassUID"] = record.sop_class_uid
    return values


def list_with(existing: str | None, value: str | None) -> str | None:
    """Add ``value`` to a sorted ``\\``-separated list of distinct values."""
    items = set(existing.split(VALUE_SEPARATOR)) if existing else set()
    if value:
        items.add(value)
    return VALUE_SEPARATOR.join(sorted(items)) or None


_NOT_LIKE_JSON_MODULE = (b"null", b"0.0000", b"e-")
"""Where orjson's text may differ from :func:`json.dumps`: ``NaN`` and infinities (orjson writes
``null``), floats below 1e-4 (orjson writes ``0.00001`` and ``1e-7``, json ``1e-05``)."""


def metadata_text(record: InstanceRecord) -> str:
    """Serialise the record's DICOM JSON once; this exact text is stored and served.

    The text is :func:`json.dumps`'s compact, non-ASCII-escaping form. orjson writes the same
    text ten times faster for what metadata holds; anything it cannot write, or may write
    differently (:data:`_NOT_LIKE_JSON_MODULE`), is written by :mod:`json` itself.
    """
    try:
        encoded = orjson.dumps(record.metadata)
    except orjson.JSONEncodeError:
        encoded = b"null"
    null, tiny, negative_exponent = _NOT_LIKE_JSON_MODULE
    if null in encoded or tiny in encoded or negative_exponent in encoded:
        return json.dumps(record.metadata, separators=(",", ":"), ensure_ascii=False)
    return encoded.decode()


_NAME_FORMS_CACHED = 1024
"""Person names whose stored forms are kept (ingest sees the same names again and again)."""
_LEVELS = (Level.PATIENT, Level.STUDY, Level.SERIES, Level.IMAGE)
_KEYWORDS = tuple(keyword for level in _LEVELS for keyword in INDEXED_ATTRIBUTES[level])
_PERSON_NAMES = tuple(keyword for keyword in _KEYWORDS if keyword in PERSON_NAME_ATTRIBUTES)
if len(set(_KEYWORDS)) != len(_KEYWORDS):  # pragma: no cover - a schema invariant
    raise AssertionError("an indexed attribute is kept at two levels")


@lru_cache(maxsize=_NAME_FORMS_CACHED)
def _name_forms(name: str | None) -> tuple[str | None, str | None]:
    """The case-folded and fuzzy forms of a person name (the same for a study's instances)."""
    return case_folded(name), fuzzy_key(name)


def flat_values(record: InstanceRecord) -> dict[str, Any]:
    """Return the stored columns of every level for ``record``, in one dictionary.

    Same values as :func:`level_values` at each level (attribute keywords are distinct across
    levels), plus the instance's stored-object columns, the ordering integers and its metadata
    text: the parameters of the SQL add transaction.
    """
    attributes = record.attributes
    values: dict[str, Any] = {keyword: attributes.get(keyword) or None for keyword in _KEYWORDS}
    for keyword in _PERSON_NAMES:
        values[keyword + CASE_FOLDED_SUFFIX], values[keyword + FUZZY_SUFFIX] = _name_forms(
            values[keyword]
        )
    blob = record.blob
    values.update(
        PatientID=values["PatientID"] or NOT_ISSUED,
        IssuerOfPatientID=values["IssuerOfPatientID"] or NOT_ISSUED,
        StudyInstanceUID=record.study_instance_uid,
        SeriesInstanceUID=record.series_instance_uid,
        SOPInstanceUID=record.sop_instance_uid,
        SOPClassUID=record.sop_class_uid,
        series_number_order=integer_order(values["SeriesNumber"]),
        instance_number_order=integer_order(values["InstanceNumber"]),
        transfer_syntax_uid=record.transfer_syntax_uid,
        blob_key=blob.key,
        blob_size=blob.size,
        blob_sha256=blob.sha256,
        number_of_frames=record.number_of_frames,
        pixel_data_offset=record.pixel_data_offset,
        received_at=microseconds(record.received_at),
        metadata=metadata_text(record),
    )
    return values
