"""Indexed attribute values (DICOM string form) to DICOM JSON (PS3.18 §F.2).

The index keeps values as DICOM strings (see :class:`drimbox.model.InstanceRecord`); matches are
returned as DICOM JSON data sets whose tags and VRs come from pydicom's data dictionary.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword

from drimbox.model import DicomJson

__all__ = [
    "RENDERED_ROWS_CAPACITY",
    "VALUE_SEPARATOR",
    "DicomJsonWriter",
    "RenderedMatches",
    "dicom_json",
    "tag_hex",
    "vr_of",
]

VALUE_SEPARATOR = "\\"
"""Separator of the values of a multi-valued attribute (PS3.5 §6.4)."""

_COMPONENT_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")
"""Component groups of a PN value, separated by ``=`` (PS3.5 §6.2.1, PS3.18 §F.2.2)."""

_INTEGER_VRS = frozenset({"IS", "SL", "SS", "SV", "UL", "US", "UV"})
_DECIMAL_VRS = frozenset({"DS", "FD", "FL"})
_INTEGER_TEXT = re.compile(r"[+-]?\d+")
RENDERED_ROWS_CAPACITY = 50_000
"""Rows whose rendering :class:`RenderedMatches` keeps (about 2 KiB each)."""

_PN_SPECIALS = frozenset(VALUE_SEPARATOR + "=")
_CONVERTED_VRS = _INTEGER_VRS | _DECIMAL_VRS | {"PN"}


@cache
def tag_hex(keyword: str) -> str:
    """Return the 8-digit upper-case hex tag of a pydicom keyword (``"0020000D"``)."""
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(keyword)
    return f"{tag:08X}"


@cache
def vr_of(keyword: str) -> str:
    """Return the VR of a pydicom keyword (the first one when the dictionary lists several)."""
    vr: str = dictionary_VR(keyword)
    return vr.split(" or ")[0]


def _number(text: str, vr: str) -> int | float | str:
    if vr in _INTEGER_VRS or _INTEGER_TEXT.fullmatch(text):
        try:
            return int(text)
        except ValueError:
            pass
    try:
        return float(text)
    except ValueError:
        return text


def _person_name(text: str) -> dict[str, str]:
    groups = text.split("=")
    return {name: group for name, group in zip(_COMPONENT_GROUPS, groups, strict=False) if group}


def _values(text: str, vr: str) -> list[Any]:
    values: list[Any] = []
    for item in text.split(VALUE_SEPARATOR):
        item = item.strip(" ") if vr != "PN" else item
        if vr == "PN":
            values.append(_person_name(item) if item else None)
        elif vr in _INTEGER_VRS or vr in _DECIMAL_VRS:
            values.append(_number(item, vr) if item else None)
        else:
            values.append(item if item else None)
    return values


class DicomJsonWriter:
    """Builds DICOM JSON data sets for a fixed list of keywords (tags and VRs looked up once).

    Listings build tens of thousands of elements: the common case (one plain string value) is
    handled inline, conversions only where the VR or a multi-value needs them.

    Parameters
    ----------
    keywords
        The keywords of every row, in row order.
    """

    def __init__(self, keywords: Sequence[str]) -> None:
        order = sorted(range(len(keywords)), key=lambda i: tag_hex(keywords[i]))
        self._fields = tuple(
            (i, tag_hex(keywords[i]), vr_of(keywords[i]), vr_of(keywords[i]) in _CONVERTED_VRS)
            for i in order
        )

    def __call__(self, row: Sequence[str | int | None]) -> DicomJson:
        """Return the data set of one row of values (keys sorted by tag, PS3.18 §F.2)."""
        data: DicomJson = {}
        for i, tag, vr, converted in self._fields:
            value = row[i]
            if value is None or value == "":
                data[tag] = {"vr": vr}
            elif isinstance(value, int):
                data[tag] = {"vr": vr, "Value": [value]}
            elif vr == "PN" and not _PN_SPECIALS.intersection(value):
                data[tag] = {"vr": vr, "Value": [{"Alphabetic": value}]}
            elif converted or VALUE_SEPARATOR in value:
                data[tag] = {"vr": vr, "Value": _values(value, vr)}
            else:
                data[tag] = {"vr": vr, "Value": [value]}
        return data


class RenderedMatches:
    """Renders rows of a listing, remembering the data set of each distinct row.

    A study listing is mostly the same rows query after query; a row of identical values
    renders to an identical data set, so it is built once. Each call returns a fresh outer
    dict (callers may add or remove attributes) whose element objects are shared: treat
    elements as read-only. Thread-safe; the memory is bounded by ``capacity`` rows.

    Parameters
    ----------
    capacity
        Rows remembered before the memory is emptied.
    """

    def __init__(self, capacity: int = RENDERED_ROWS_CAPACITY) -> None:
        self._capacity = capacity
        self._writers: dict[tuple[str, ...], DicomJsonWriter] = {}
        self._rendered: dict[tuple[object, ...], DicomJson] = {}

    def render(
        self, keywords: tuple[str, ...], rows: Iterable[Sequence[str | int | None]]
    ) -> list[DicomJson]:
        """Return the DICOM JSON data set of each row (values in ``keywords`` order)."""
        writer = self._writers.get(keywords)
        if writer is None:
            writer = self._writers[keywords] = DicomJsonWriter(keywords)
        rendered = self._rendered
        if len(rendered) > self._capacity:
            rendered.clear()
        matches = []
        for row in rows:
            key = (keywords, *row)
            data = rendered.get(key)
            if data is None:
                data = rendered[key] = writer(row)
            matches.append(dict(data))
        return matches


def dicom_json(values: Mapping[str, str | int | None]) -> DicomJson:
    """Build a DICOM JSON data set from values by keyword.

    Parameters
    ----------
    values
        Keyword to value in DICOM string form (``\\``-separated when multi-valued), an integer
        (computed counts), or ``None``/empty for an empty attribute (``{"vr": ...}`` only).

    Returns
    -------
    DicomJson
        Keys sorted by tag, as PS3.18 §F.2 recommends.
    """
    keywords = list(values)
    return DicomJsonWriter(keywords)([values[k] for k in keywords])
