"""Small helpers shared by the registry tests (raw HTTP on the FHIR base)."""

from __future__ import annotations

from typing import Any

import httpx

from registry._fhir import FHIR_JSON, provide_document_bundle
from registry.models import ENTITLEMENT_HEADER, MASKED_ENTITLEMENT, ManifestSubmission
from tests.registry.conftest import validate_fhir

__all__ = ["ENTITLED", "find_by_kos", "patient_param", "post_bundle", "publish", "search"]

#: Headers of a search entitled to masked entries.
ENTITLED = {ENTITLEMENT_HEADER: MASKED_ENTITLEMENT}


def patient_param(manifest: ManifestSubmission) -> str:
    """The ``patient.identifier`` search value of a manifest's patient."""
    return f"urn:oid:{manifest.patient_oid}|{manifest.patient_value}"


def post_bundle(http: httpx.Client, bundle: Any, **headers: str) -> httpx.Response:
    """POST a transaction Bundle (ITI-65) to the FHIR base."""
    return http.post("/", json=bundle, headers={"Content-Type": FHIR_JSON, **headers})


def publish(http: httpx.Client, manifest: ManifestSubmission, kos: bytes, **headers: str) -> str:
    """Publish and return the DocumentReference id; fail on anything but success."""
    response = post_bundle(http, provide_document_bundle(manifest, kos), **headers)
    assert response.status_code == httpx.codes.OK, response.text
    validate_fhir(response.json())
    locations = [e["response"].get("location", "") for e in response.json()["entry"]]
    return next(
        str(loc).split("/")[1] for loc in locations if str(loc).startswith("DocumentReference/")
    )


def search(http: httpx.Client, *params: tuple[str, str], **headers: str) -> list[dict[str, Any]]:
    """Run one ITI-67 search; return the DocumentReferences of the first page (validated)."""
    response = http.get("/DocumentReference", params=list(params), headers=headers)
    assert response.status_code == httpx.codes.OK, response.text
    validate_fhir(response.json())
    return [entry["resource"] for entry in response.json().get("entry", [])]


def find_by_kos(http: httpx.Client, kos_uid: str) -> list[dict[str, Any]]:
    """Every stored entry (any status, masked included) of a KOS SOP Instance UID."""
    return search(http, ("identifier", f"urn:ietf:rfc:3986|urn:oid:{kos_uid}"), **ENTITLED)
