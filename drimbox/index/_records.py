"""From an :class:`drimbox.model.InstanceRecord` to the values stored at each level."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from drimbox.dicom.attributes import INDEXED_ATTRIBUTES, PERSON_NAME_ATTRIBUTES
from drimbox.index._dicomjson import VALUE_SEPARATOR
from drimbox.index._query import CASE_FOLDED_SUFFIX, FUZZY_SUFFIX, case_folded, fuzzy_key
from drimbox.model import InstanceRecord, Level

__all__ = [
    "EPOCH",
    "NOT_ISSUED",
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


def metadata_text(record: InstanceRecord) -> str:
    """Serialise the record's DICOM JSON once; this exact text is stored and served."""
    return json.dumps(record.metadata, separators=(",", ":"), ensure_ascii=False)
