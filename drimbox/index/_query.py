"""Query planning shared by every Index adapter: PS3.4 §C.2.2.2 matching, once.

A :class:`drimbox.model.Query` is turned into a :class:`Plan`: conditions (each a disjunction of
terms over one stored column) and the keywords to return. The SQL adapter translates terms into
SQL; the memory adapter evaluates them with :func:`term_matches`. Both therefore match alike.

Matching kinds (PS3.4 §C.2.2.2): universal (empty value, or ``*``), single value (exact,
case-sensitive; PN case-insensitive, which the standard leaves to the implementation), wildcard
(``*`` and ``?``, translated to SQL ``LIKE``), list of values (``\\``-separated, any matches),
range (DA, TM, DT: ``A-B``, ``A-``, ``-B``, inclusive; a bound matches every value it is a
prefix of, so ``-1200`` includes ``120059``), and fuzzy person-name matching (case- and
accent-insensitive, each name component of the key a prefix of some component of the name).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from functools import cache

from drimbox.dicom.attributes import (
    COMPUTED_ATTRIBUTES,
    INDEXED_ATTRIBUTES,
    LEVEL_UNIQUE_KEY,
    PERSON_NAME_ATTRIBUTES,
    level_of,
)
from drimbox.errors import InvalidQueryError
from drimbox.index._dicomjson import VALUE_SEPARATOR, vr_of
from drimbox.model import Level, Query

__all__ = [
    "CASE_FOLDED_SUFFIX",
    "FUZZY_SUFFIX",
    "LEVELS",
    "LIKE_ESCAPE",
    "MAXIMUM_LIMIT",
    "RANGE_UPPER_SENTINEL",
    "Condition",
    "Form",
    "Plan",
    "Term",
    "TermKind",
    "case_folded",
    "fuzzy_key",
    "levels_from",
    "plan_query",
    "stored_column",
    "term_matches",
]

MAXIMUM_LIMIT = 10_000
"""Most matches returned by one search when the query sets no limit (PS3.18 §8.3.4.4)."""

LEVELS = (Level.PATIENT, Level.STUDY, Level.SERIES, Level.IMAGE)
"""Query/retrieve levels from the top of the hierarchy down (PS3.4 §C.3)."""

CASE_FOLDED_SUFFIX = "_ci"
"""Suffix of the column holding the upper-cased value of a PN attribute."""

FUZZY_SUFFIX = "_fuzzy"
"""Suffix of the column holding the fuzzy key of a PN attribute (see :func:`fuzzy_key`)."""

LIKE_ESCAPE = "\\"
"""Escape character of the LIKE patterns built here."""

RANGE_UPPER_SENTINEL = "\x7f"
"""Appended to a range's upper bound so that every value it prefixes is included."""

_RANGE_VRS = frozenset({"DA", "TM", "DT"})
_WILDCARDS = frozenset("*?")
_LIKE_SPECIALS = frozenset("%_" + LIKE_ESCAPE)
_NAME_SEPARATORS = re.compile(r"[\^\s,]+")

_STUDY_COMPUTED_FILTERS: Mapping[str, str] = {
    "ModalitiesInStudy": "Modality",
    "SOPClassesInStudy": "SOPClassUID",
}
"""Computed study attributes that can be matched, and the lower-level attribute they match."""


class Form(Enum):
    """Which stored form of an attribute a condition reads."""

    RAW = ""
    CASE_FOLDED = CASE_FOLDED_SUFFIX
    FUZZY = FUZZY_SUFFIX


class TermKind(Enum):
    """Kind of one matching term."""

    EQUAL = "equal"
    LIKE = "like"
    ALL_LIKE = "all-like"
    RANGE = "range"


@dataclass(frozen=True, slots=True)
class Term:
    """One alternative of a condition.

    ``patterns`` holds the LIKE pattern(s) (escape :data:`LIKE_ESCAPE`); ``ALL_LIKE`` requires
    every pattern to match. ``lower``/``upper`` are the inclusive bounds of a range, ``upper``
    already extended with :data:`RANGE_UPPER_SENTINEL`.
    """

    kind: TermKind
    value: str = ""
    patterns: tuple[str, ...] = ()
    lower: str | None = None
    upper: str | None = None


@dataclass(frozen=True, slots=True)
class Condition:
    """A filter on one stored column: true when any term matches."""

    keyword: str
    level: Level
    form: Form
    terms: tuple[Term, ...]

    @property
    def column(self) -> str:
        """Name of the stored column the condition reads."""
        return stored_column(self.keyword, self.form)


@dataclass(frozen=True, slots=True)
class Plan:
    """A validated query: conditions, keywords to return, paging."""

    level: Level
    conditions: tuple[Condition, ...]
    returned: tuple[str, ...]
    limit: int
    offset: int


def stored_column(keyword: str, form: Form) -> str:
    """Return the column name of ``keyword`` in ``form``."""
    return keyword + form.value


def levels_from(level: Level) -> tuple[Level, ...]:
    """Return ``level`` and the levels above it, top first."""
    return LEVELS[: LEVELS.index(level) + 1]


def case_folded(value: str | None) -> str | None:
    """Return the case-insensitive form of a person name (upper case)."""
    return None if value is None else value.upper()


def _ascii_upper(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).upper()


def fuzzy_key(value: str | None) -> str | None:
    """Return the fuzzy form of a person name: ``" DUPONT HELENE"`` for ``Dupont^Hélène``.

    Only the alphabetic group is kept; components are separated and preceded by one space, so
    that a component prefix ``P`` is matched by the pattern ``"% P%"``.
    """
    if value is None:
        return None
    names = value.split(VALUE_SEPARATOR)
    tokens = [
        token
        for name in names
        for token in _NAME_SEPARATORS.split(_ascii_upper(name.split("=")[0]))
        if token
    ]
    return "".join(" " + token for token in tokens)


def _like_pattern(text: str) -> str:
    out = []
    for character in text:
        if character == "*":
            out.append("%")
        elif character == "?":
            out.append("_")
        elif character in _LIKE_SPECIALS:
            out.append(LIKE_ESCAPE + character)
        else:
            out.append(character)
    return "".join(out)


@cache
def _like_regex(pattern: str) -> re.Pattern[str]:
    parts = []
    escaped = False
    for character in pattern:
        if escaped:
            parts.append(re.escape(character))
            escaped = False
        elif character == LIKE_ESCAPE:
            escaped = True
        elif character == "%":
            parts.append(".*")
        elif character == "_":
            parts.append(".")
        else:
            parts.append(re.escape(character))
    return re.compile("".join(parts), re.DOTALL)


def term_matches(term: Term, value: str | None) -> bool:
    """Evaluate one term against a stored value (the memory adapter's matcher)."""
    if value is None:
        return False
    if term.kind is TermKind.EQUAL:
        return value == term.value
    if term.kind in (TermKind.LIKE, TermKind.ALL_LIKE):
        return all(_like_regex(p).fullmatch(value) for p in term.patterns)
    lower_ok = term.lower is None or value >= term.lower
    upper_ok = term.upper is None or value <= term.upper
    return lower_ok and upper_ok


_DT_RANGE = re.compile(
    r"(?P<lower>\d{4,14}(?:\.\d{1,6})?(?:[+-]\d{4})?)?\s*-\s*"
    r"(?P<upper>\d{4,14}(?:\.\d{1,6})?(?:[+-]\d{4})?)?"
)
"""A DT range (PS3.4 §C.2.2.2.5): either bound may carry a UTC offset ``&ZZXX`` whose sign
can be ``-``, so the range's ``-`` is the one between two well-formed bounds (PS3.5 §6.2)."""
_DT_OFFSET = re.compile(r"[+-]\d{4}$")


def _range_term(keyword: str, text: str) -> Term:
    if vr_of(keyword) == "DT" and (match := _DT_RANGE.fullmatch(text.strip())):
        # Stored DT values are compared as written (local time); a bound's offset is dropped.
        lower = _DT_OFFSET.sub("", match["lower"] or "")
        upper = _DT_OFFSET.sub("", match["upper"] or "")
    else:
        lower, _, upper = text.partition("-")
    lower, upper = lower.strip(), upper.strip()
    if not (lower or upper):
        raise InvalidQueryError(f"{keyword}: a range needs at least one bound", keyword)
    return Term(
        TermKind.RANGE,
        lower=lower or None,
        upper=(upper + RANGE_UPPER_SENTINEL) if upper else None,
    )


def _terms(keyword: str, value: str, fuzzy: bool) -> tuple[Form, tuple[Term, ...]] | None:
    vr = vr_of(keyword)
    items = [item for item in value.split(VALUE_SEPARATOR) if item != ""]
    if not items or any(item.strip("*") == "" for item in items):
        return None  # universal matching (PS3.4 §C.2.2.2.3)
    is_name = keyword in PERSON_NAME_ATTRIBUTES
    if is_name and fuzzy:
        fuzzy_terms = []
        for item in items:
            key = fuzzy_key(item.replace("*", "\x00").replace("?", "\x01")) or ""
            tokens = key.replace("\x00", "*").replace("\x01", "?").split()
            patterns = tuple("% " + _like_pattern(token) + "%" for token in tokens)
            fuzzy_terms.append(Term(TermKind.ALL_LIKE, patterns=patterns))
        return Form.FUZZY, tuple(fuzzy_terms)
    form = Form.CASE_FOLDED if is_name else Form.RAW
    terms = []
    for item in items:
        text = item.upper() if is_name else item
        if vr in _RANGE_VRS and "-" in text:
            terms.append(_range_term(keyword, text))
        elif _WILDCARDS & set(text):
            terms.append(Term(TermKind.LIKE, patterns=(_like_pattern(text),)))
        else:
            terms.append(Term(TermKind.EQUAL, value=text.strip(" ") if not is_name else text))
    return form, tuple(terms)


def _returned(query: Query, filter_keywords: list[str]) -> tuple[str, ...]:
    level = query.level
    levels = levels_from(level)
    keywords: list[str] = [LEVEL_UNIQUE_KEY[above] for above in levels[1:-1]]
    if level is Level.STUDY:
        keywords.extend(INDEXED_ATTRIBUTES[Level.PATIENT])
    keywords.extend(INDEXED_ATTRIBUTES[level])
    keywords.extend(COMPUTED_ATTRIBUTES[level])
    available = {k for above in levels for k in INDEXED_ATTRIBUTES[above]}
    available.update(COMPUTED_ATTRIBUTES[level])
    if "all" in query.include:
        keywords.extend(k for above in levels for k in INDEXED_ATTRIBUTES[above])
    keywords.extend(k for k in sorted(query.include) if k in available)
    keywords.extend(k for k in filter_keywords if k in available)
    return tuple(dict.fromkeys(keywords))


def plan_query(query: Query) -> Plan:
    """Validate a query and plan its matching.

    Raises
    ------
    InvalidQueryError
        A filter names an unknown or unindexed keyword (``parameter`` is the keyword), a
        non-matchable computed attribute has a value, or the paging is negative.
    """
    if query.offset < 0:
        raise InvalidQueryError("offset must not be negative", "offset")
    if query.limit is not None and query.limit < 0:
        raise InvalidQueryError("limit must not be negative", "limit")
    conditions: list[Condition] = []
    for keyword, value in query.filters.items():
        level = level_of(keyword)
        if level is None:
            raise InvalidQueryError(f"{keyword} is not a supported matching key", keyword)
        if keyword in COMPUTED_ATTRIBUTES[level]:
            if not value:
                continue
            target = _STUDY_COMPUTED_FILTERS.get(keyword)
            if target is None or query.level not in (Level.PATIENT, Level.STUDY):
                raise InvalidQueryError(f"{keyword} can be returned, not matched", keyword)
            keyword, level = target, level_of(target) or Level.SERIES
        planned = _terms(keyword, value, query.fuzzy)
        if planned is not None:
            form, terms = planned
            conditions.append(Condition(keyword, level, form, terms))
    limit = MAXIMUM_LIMIT if query.limit is None else min(query.limit, MAXIMUM_LIMIT)
    return Plan(
        level=query.level,
        conditions=tuple(conditions),
        returned=_returned(query, list(query.filters)),
        limit=limit,
        offset=query.offset,
    )
