"""Rows of the registry store: manifest <-> row mapping, search conditions, paging cursors."""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import orjson
from sqlalchemy import ColumnElement, Row, or_

from registry.models import (
    DCM_SYSTEM,
    Coding,
    Confidentiality,
    EntryStatus,
    ManifestSubmission,
    Party,
)
from registry.service._schema import entries

__all__ = [
    "EntryQuery",
    "StoredEntry",
    "decode_cursor",
    "encode_cursor",
    "entry_row",
    "event_token",
    "search_conditions",
    "stored_entry",
]


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """An entry as stored: its manifest (``replaces`` = replaced entry id) and content facts."""

    pk: int
    entry_id: str
    status: EntryStatus
    created: datetime
    updated: datetime
    manifest: ManifestSubmission
    content_size: int
    content_sha256: str


@dataclass(frozen=True, slots=True)
class EntryQuery:
    """A store-level search (ITI-67 parameters, already parsed and checked).

    ``events`` is an AND of OR-groups of ``(system or None, code)``; ``related`` values match
    the StudyInstanceUID or the accession number; ``masked_visible_to`` lists the requester ids
    (custodian or source box) that may see masked entries; ``include_masked`` sees them all.
    """

    patient: tuple[str, str] | None = None
    kos_sop_instance_uid: str | None = None
    entry_id: str | None = None
    statuses: tuple[EntryStatus, ...] = ()
    events: tuple[tuple[tuple[str | None, str], ...], ...] = ()
    date_ge: date | None = None
    date_le: date | None = None
    related: tuple[str, ...] = ()
    document_type: tuple[str | None, str] | None = None
    include_masked: bool = False
    masked_visible_to: tuple[str, ...] = ()
    count: int = 100
    cursor: str | None = None


def event_token(system: str, code: str) -> str:
    """Return the stored token of an event code (``system|code``)."""
    return f"{system}|{code}"


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _party_json(party: Party | None) -> list[str | None] | None:
    return None if party is None else [party.system, party.value, party.display]


def entry_row(
    manifest: ManifestSubmission,
    *,
    entry_id: str,
    kos: bytes,
    now: datetime,
    replaces_id: str | None,
) -> dict[str, Any]:
    """Return the ``registry_entry`` row of a manifest (also used by the bulk loader)."""
    tokens = [event_token(DCM_SYSTEM, m) for m in manifest.modalities]
    tokens += [event_token(r.system, r.code) for r in manifest.regions]
    details = {
        "m": list(manifest.modalities),
        "r": [[r.system, r.code, r.display] for r in manifest.regions],
        "a": _party_json(manifest.author),
        "c": _party_json(manifest.custodian),
        "t": [manifest.document_type.system, manifest.document_type.code],
        "td": manifest.document_type.display,
        "as": manifest.accession_system,
        "ti": manifest.title,
    }
    return {
        "entry_id": entry_id,
        "kos_sop_instance_uid": manifest.kos_sop_instance_uid,
        "patient_oid": manifest.patient_oid,
        "patient_value": manifest.patient_value,
        "status": EntryStatus.CURRENT.value,
        "period_start": manifest.period_start,
        "period_end": manifest.period_end or manifest.period_start,
        "study_instance_uid": manifest.study_instance_uid,
        "accession_number": manifest.accession_number,
        "event_tokens": " " + " ".join(tokens) + " ",
        "type_token": event_token(manifest.document_type.system, manifest.document_type.code),
        "source_box_id": manifest.source_box_id,
        "custodian_id": None if manifest.custodian is None else manifest.custodian.value,
        "author_id": None if manifest.author is None else manifest.author.value,
        "confidentiality": manifest.confidentiality.value,
        "masked": manifest.masked,
        "replaces_id": replaces_id,
        "created": now,
        "updated": now,
        "details": orjson.dumps(details).decode(),
        "content_size": len(kos),
        "content_sha256": hashlib.sha256(kos).hexdigest(),
    }


def _party(value: list[str | None] | None) -> Party | None:
    if value is None:
        return None
    system, identifier, display = value
    return Party(str(system), str(identifier), display)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def stored_entry(row: Row[Any] | Any) -> StoredEntry:
    """Return the entry of a ``registry_entry`` row (or any object with its columns)."""
    details = orjson.loads(row.details)
    period_end = row.period_end if row.period_end != row.period_start else None
    manifest = ManifestSubmission(
        patient_value=row.patient_value,
        patient_oid=row.patient_oid,
        kos_sop_instance_uid=row.kos_sop_instance_uid,
        study_instance_uid=row.study_instance_uid,
        source_box_id=row.source_box_id,
        period_start=row.period_start,
        period_end=period_end,
        accession_number=row.accession_number,
        accession_system=details["as"],
        modalities=tuple(details["m"]),
        regions=tuple(Coding(s, c, d) for s, c, d in details["r"]),
        author=_party(details["a"]),
        custodian=_party(details["c"]),
        confidentiality=Confidentiality(row.confidentiality),
        masked=bool(row.masked),
        identity_qualified=True,
        document_type=Coding(details["t"][0], details["t"][1], details["td"]),
        title=details["ti"],
        replaces=row.replaces_id,
    )
    return StoredEntry(
        pk=row.pk,
        entry_id=row.entry_id,
        status=EntryStatus(row.status),
        created=_aware(row.created),
        updated=_aware(row.updated),
        manifest=manifest,
        content_size=row.content_size,
        content_sha256=row.content_sha256,
    )


def encode_cursor(entry: StoredEntry) -> str:
    raw = f"{entry.manifest.period_start.isoformat()}|{entry.pk}".encode()
    return base64.urlsafe_b64encode(raw).decode("ascii")


def decode_cursor(cursor: str) -> tuple[date, int]:
    try:
        start, pk = base64.urlsafe_b64decode(cursor.encode("ascii")).decode().split("|")
        return date.fromisoformat(start), int(pk)
    except (ValueError, UnicodeError, binascii.Error):
        raise ValueError("the paging cursor is not one this registry issued") from None


def search_conditions(query: EntryQuery) -> Iterable[Any]:
    if query.patient is not None:
        yield entries.c.patient_oid == query.patient[0]
        yield entries.c.patient_value == query.patient[1]
    if query.kos_sop_instance_uid is not None:
        yield entries.c.kos_sop_instance_uid == query.kos_sop_instance_uid
    if query.entry_id is not None:
        yield entries.c.entry_id == query.entry_id
    if query.statuses:
        yield entries.c.status.in_([status.value for status in query.statuses])
    for group in query.events:
        yield or_(
            *(
                entries.c.event_tokens.like(
                    f"% {_like_escape(system)}|{_like_escape(code)} %"
                    if system is not None
                    else f"%|{_like_escape(code)} %",
                    escape="\\",
                )
                for system, code in group
            )
        )
    if query.date_ge is not None:
        yield entries.c.period_end >= query.date_ge
    if query.date_le is not None:
        yield entries.c.period_start <= query.date_le
    if query.related:
        yield or_(
            entries.c.study_instance_uid.in_(query.related),
            entries.c.accession_number.in_(query.related),
        )
    if query.document_type is not None:
        system, code = query.document_type
        if system is None:
            yield entries.c.type_token.like(f"%|{_like_escape(code)}", escape="\\")
        else:
            yield entries.c.type_token == event_token(system, code)
    if not query.include_masked:
        visible: list[ColumnElement[bool]] = [entries.c.masked.is_(False)]
        for requester in query.masked_visible_to:
            visible += [entries.c.custodian_id == requester, entries.c.source_box_id == requester]
        yield or_(*visible)
