"""ITI-67 search parameters: from the query string to an :class:`EntryQuery`, strictly.

Supported (FHIR R4 DocumentReference search parameters, IHE MHD ITI-67): ``patient.identifier``,
``identifier`` (masterIdentifier), ``_id``, ``status``, ``event``, ``period`` (prefixes ``eq``,
``ge``, ``gt``, ``le``, ``lt``), ``related``, ``type``, ``_count``; plus ``_cursor``, the opaque
paging token of the ``next`` link. Any other parameter is refused (strict handling).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

from registry._fhir import URI_SYSTEM, BundleError
from registry._ins import InsError, oid_of_system, validate_ins
from registry.models import EntryStatus
from registry.service._rows import EntryQuery

__all__ = ["DEFAULT_COUNT", "MAX_COUNT", "parse_search"]

#: Page size when ``_count`` is absent, and the largest page a search may ask for.
DEFAULT_COUNT = 50
MAX_COUNT = 500
_PATIENT = "patient.identifier"
_KNOWN = {
    _PATIENT,
    "identifier",
    "_id",
    "status",
    "event",
    "period",
    "related",
    "type",
    "_count",
    "_cursor",
    "_format",
}
_ONE_DAY = timedelta(days=1)


def _bad(message: str, expression: str, code: str = "value") -> BundleError:
    return BundleError(message, code=code, expression=expression)


def _token(text: str) -> tuple[str | None, str]:
    system, bar, code = text.rpartition("|")
    if not code:
        raise _bad(f"empty code in {text!r}", "token")
    return (system or None) if bar else None, code


def _uid_value(text: str) -> str:
    return text.removeprefix("urn:oid:")


def _single(params: Sequence[tuple[str, str]], name: str) -> str | None:
    values = [value for key, value in params if key == name]
    if len(values) > 1:
        raise _bad(f"{name} may be given once", name)
    return values[0] if values else None


def _period(values: list[str]) -> tuple[date | None, date | None]:
    low: date | None = None
    high: date | None = None
    for value in values:
        prefix, text = (value[:2], value[2:]) if value[:2].isalpha() else ("eq", value)
        try:
            day = date.fromisoformat(text[:10])
        except ValueError:
            raise _bad(f"period {value!r} is not [eq|ge|gt|le|lt]YYYY-MM-DD", "period") from None
        if prefix not in {"eq", "ge", "gt", "le", "lt"}:
            raise _bad(f"period prefix {prefix!r} is not supported", "period", "not-supported")
        if prefix in {"eq", "ge", "gt"}:
            start = day + _ONE_DAY if prefix == "gt" else day
            low = start if low is None else max(low, start)
        if prefix in {"eq", "le", "lt"}:
            end = day - _ONE_DAY if prefix == "lt" else day
            high = end if high is None else min(high, end)
    return low, high


def parse_search(
    params: Sequence[tuple[str, str]],
    *,
    production: bool,
    include_masked: bool,
    requester: str | None,
) -> EntryQuery:
    """Return the store query of an ITI-67 query string.

    Raises
    ------
    BundleError
        An unknown or malformed parameter, or a search without a patient or identifier.
    """
    unknown = sorted({key for key, _ in params} - _KNOWN)
    if unknown:
        raise _bad(
            f"unsupported search parameter(s): {', '.join(unknown)}", unknown[0], "not-supported"
        )
    patient = None
    patient_text = _single(params, _PATIENT)
    if patient_text is not None:
        system, _, value = patient_text.partition("|")
        try:
            oid = oid_of_system(system)
            validate_ins(value, oid, production=production)
        except InsError as error:
            raise _bad(f"patient.identifier refused: {error}", _PATIENT) from None
        patient = (oid, value)
    kos_uid = None
    identifier = _single(params, "identifier")
    if identifier is not None:
        identifier_system, identifier_value = _token(identifier)
        if identifier_system not in {None, URI_SYSTEM}:
            raise _bad(f"identifier system must be {URI_SYSTEM}", "identifier")
        kos_uid = _uid_value(identifier_value)
    entry_id = _single(params, "_id")
    if patient is None and kos_uid is None and entry_id is None:
        raise _bad(
            "a search needs patient.identifier=<urn:oid:INS OID>|<INS> (or identifier, _id)",
            _PATIENT,
            "required",
        )
    statuses: list[EntryStatus] = []
    for text in (value for key, value in params if key == "status"):
        for status in text.split(","):
            try:
                statuses.append(EntryStatus(status))
            except ValueError:
                raise _bad(
                    f"status {status!r} is not a DocumentReference status", "status"
                ) from None
    events = tuple(
        tuple(_token(part) for part in value.split(",")) for key, value in params if key == "event"
    )
    low, high = _period([value for key, value in params if key == "period"])
    related = tuple(
        _uid_value(_token(part)[1])
        for key, value in params
        if key == "related"
        for part in value.split(",")
    )
    type_text = _single(params, "type")
    count_text = _single(params, "_count")
    try:
        count = DEFAULT_COUNT if count_text is None else int(count_text)
    except ValueError:
        raise _bad("_count must be an integer", "_count") from None
    if not 1 <= count <= MAX_COUNT:
        raise _bad(f"_count must be between 1 and {MAX_COUNT}", "_count")
    return EntryQuery(
        patient=patient,
        kos_sop_instance_uid=kos_uid,
        entry_id=entry_id,
        statuses=tuple(statuses),
        events=events,
        date_ge=low,
        date_le=high,
        related=related,
        document_type=None if type_text is None else _token(type_text),
        include_masked=include_masked,
        masked_visible_to=() if requester is None else (requester,),
        count=count,
        cursor=_single(params, "_cursor"),
    )
