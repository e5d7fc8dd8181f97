"""DICOM JSON (PS3.18 §F.2) helpers for DICOMweb responses.

Tags are named constants with their standard reference; values are built as the JSON model wants
them (``{"vr": ..., "Value": [...]}``) without going through pydicom, which keeps QIDO and STOW
responses cheap to produce.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from drimbox.model import DicomJson

__all__ = [
    "FAILED_SOP_SEQUENCE",
    "FAILURE_REASON",
    "REFERENCED_SOP_CLASS_UID",
    "REFERENCED_SOP_INSTANCE_UID",
    "REFERENCED_SOP_SEQUENCE",
    "RETRIEVE_URL",
    "SERIES_INSTANCE_UID",
    "SOP_INSTANCE_UID",
    "STUDY_INSTANCE_UID",
    "WARNING_REASON",
    "dump",
    "element",
    "first_value",
    "with_retrieve_url",
]

STUDY_INSTANCE_UID = "0020000D"
"""Study Instance UID (0020,000D), PS3.3 §C.7.2.1."""
SERIES_INSTANCE_UID = "0020000E"
"""Series Instance UID (0020,000E), PS3.3 §C.7.3.1."""
SOP_INSTANCE_UID = "00080018"
"""SOP Instance UID (0008,0018), PS3.3 §C.12.1."""
RETRIEVE_URL = "00081190"
"""Retrieve URL (0008,1190), PS3.18 §10.6.3.3 and §10.5.3."""
REFERENCED_SOP_SEQUENCE = "00081199"
"""Referenced SOP Sequence (0008,1199), PS3.18 Table 10.5.3-1."""
FAILED_SOP_SEQUENCE = "00081198"
"""Failed SOP Sequence (0008,1198), PS3.18 Table 10.5.3-1."""
REFERENCED_SOP_CLASS_UID = "00081150"
"""Referenced SOP Class UID (0008,1150)."""
REFERENCED_SOP_INSTANCE_UID = "00081155"
"""Referenced SOP Instance UID (0008,1155)."""
FAILURE_REASON = "00081197"
"""Failure Reason (0008,1197), PS3.18 §10.5.3."""
WARNING_REASON = "00081196"
"""Warning Reason (0008,1196), PS3.18 §10.5.3."""


def element(vr: str, *values: Any) -> dict[str, Any]:
    """Return one DICOM JSON attribute; no value gives an attribute without ``Value``."""
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


def first_value(data_set: DicomJson, tag: str) -> Any:
    """Return the first value of ``tag`` in a DICOM JSON data set, or ``None``."""
    values = data_set.get(tag, {}).get("Value")
    return values[0] if values else None


def with_retrieve_url(match: DicomJson, base_url: str) -> DicomJson:
    """Add the Retrieve URL (0008,1190) of a QIDO match (PS3.18 §10.6.3.3.1), in place.

    The URL points at the most specific resource the match identifies (instance, series or
    study); a match without a Study Instance UID is returned unchanged.
    """
    study = first_value(match, STUDY_INSTANCE_UID)
    if study is None:
        return match
    url = f"{base_url}/studies/{study}"
    series = first_value(match, SERIES_INSTANCE_UID)
    if series is not None:
        url += f"/series/{series}"
        instance = first_value(match, SOP_INSTANCE_UID)
        if instance is not None:
            url += f"/instances/{instance}"
    match[RETRIEVE_URL] = element("UR", url)
    return match


def dump(data_sets: DicomJson | Iterable[DicomJson]) -> bytes:
    """Encode DICOM JSON compactly as UTF-8 (orjson: a 5,000-study listing in milliseconds)."""
    if not isinstance(data_sets, dict):
        data_sets = list(data_sets)
    return orjson.dumps(data_sets)
