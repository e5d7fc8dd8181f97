"""FHIR resources the registry answers with: DocumentReference, Bundles, Binary, capabilities."""

from __future__ import annotations

import base64
from typing import Any

from starlette.datastructures import URL

from registry._fhir import FHIR_JSON, document_reference
from registry.service._rows import StoredEntry

__all__ = [
    "binary_resource",
    "capability_statement",
    "searchset",
    "stored_document_reference",
    "transaction_response",
]

Json = dict[str, Any]
_FHIR_VERSION = "4.0.1"
#: IHE MHD Document Responder capability (ITI-67, ITI-68) and Recipient (ITI-65).
_MHD_SEARCH_PARAMETERS = {
    "patient.identifier": "token",
    "identifier": "token",
    "_id": "token",
    "status": "token",
    "event": "token",
    "period": "date",
    "related": "token",
    "type": "token",
}


def stored_document_reference(entry: StoredEntry, base: str) -> Json:
    """Return the DocumentReference of a stored entry; its attachment URL is the ITI-68 URL."""
    return document_reference(
        entry.manifest,
        entry_id=entry.entry_id,
        status=entry.status,
        created=entry.created,
        content_url=f"{base}/Binary/{entry.entry_id}",
        content_size=entry.content_size,
        replaces_reference=(
            None
            if entry.manifest.replaces is None
            else f"DocumentReference/{entry.manifest.replaces}"
        ),
    )


def transaction_response(entry: StoredEntry, *, created: bool, order: list[str]) -> Json:
    """Return the ITI-65 transaction-response Bundle, one entry per request entry, in order."""
    status = "201 Created" if created else "200 OK"
    locations = {
        "DocumentReference": f"DocumentReference/{entry.entry_id}",
        "Binary": f"Binary/{entry.entry_id}",
    }
    entries: list[Json] = []
    for kind in order:
        response: Json = {"status": status}
        if kind in locations:
            response["location"] = locations[kind]
        entries.append({"response": response})
    return {"resourceType": "Bundle", "type": "transaction-response", "entry": entries}


def searchset(found: list[StoredEntry], cursor: str | None, *, base: str, url: URL) -> Json:
    """Return the ITI-67 searchset Bundle with its ``self`` and ``next`` links."""
    links = [{"relation": "self", "url": str(url)}]
    if cursor is not None:
        links.append({"relation": "next", "url": str(url.include_query_params(_cursor=cursor))})
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "link": links,
        "entry": [
            {
                "fullUrl": f"{base}/DocumentReference/{entry.entry_id}",
                "resource": stored_document_reference(entry, base),
                "search": {"mode": "match"},
            }
            for entry in found
        ],
    }


def binary_resource(entry_id: str, content: bytes) -> Json:
    """Return the KOS as a FHIR Binary (when the client asks for FHIR JSON)."""
    return {
        "resourceType": "Binary",
        "id": entry_id,
        "contentType": "application/dicom",
        "data": base64.b64encode(content).decode("ascii"),
    }


def capability_statement(base: str) -> Json:
    """Return the CapabilityStatement of the registry (FHIR R4 ``/metadata``)."""
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-01-01",
        "kind": "instance",
        "implementation": {"description": "drimbox national registry (IHE MHD)", "url": base},
        "fhirVersion": _FHIR_VERSION,
        "format": [FHIR_JSON],
        "rest": [
            {
                "mode": "server",
                "interaction": [{"code": "transaction"}],
                "resource": [
                    {
                        "type": "DocumentReference",
                        "interaction": [
                            {"code": "read"},
                            {"code": "search-type"},
                            {"code": "delete"},
                        ],
                        "searchParam": [
                            {"name": name, "type": kind}
                            for name, kind in _MHD_SEARCH_PARAMETERS.items()
                        ],
                    },
                    {"type": "Binary", "interaction": [{"code": "read"}]},
                ],
            }
        ],
    }
