"""ITI-65 rules: malformed Bundles and identifiers are refused with an OperationOutcome and
nothing is stored; production mode; the audit trail (both databases)."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from registry._fhir import provide_document_bundle
from registry._ins import INS_NIR_OID
from registry.models import REQUESTER_HEADER
from tests.registry.conftest import validate_fhir
from tests.registry.helpers import find_by_kos, patient_param, post_bundle, publish, search
from tests.registry.kos import SAMPLE_INS, build_kos, make_ins, make_manifest

Bundle = dict[str, Any]


def _document(bundle: Bundle) -> dict[str, Any]:
    return next(
        e["resource"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "DocumentReference"
    )


def _binary(bundle: Bundle) -> dict[str, Any]:
    return next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Binary")


def _set_kos(bundle: Bundle, kos: bytes) -> None:
    _binary(bundle)["data"] = base64.b64encode(kos).decode()
    attachment = _document(bundle)["content"][0]["attachment"]
    attachment["size"] = len(kos)
    attachment["hash"] = base64.b64encode(
        hashlib.sha1(kos, usedforsecurity=False).digest()
    ).decode()


def _set_subject(bundle: Bundle, system: str, value: str) -> None:
    _document(bundle)["subject"]["identifier"] = {"system": system, "value": value}


_BROKEN: dict[str, tuple[Callable[[Bundle], object], int, str]] = {
    "not a transaction": (lambda b: b.update(type="batch"), 400, "structure"),
    "no DocumentReference": (lambda b: b["entry"].pop(1), 400, "structure"),
    "two DocumentReferences": (
        lambda b: b["entry"].append(copy.deepcopy(b["entry"][1])),
        400,
        "structure",
    ),
    "extra Patient": (
        lambda b: b["entry"].append(
            {
                "fullUrl": "urn:uuid:x",
                "resource": {"resourceType": "Patient"},
                "request": {"method": "POST", "url": "Patient"},
            }
        ),
        400,
        "not-supported",
    ),
    "PUT request": (lambda b: b["entry"][1]["request"].update(method="PUT"), 400, "not-supported"),
    "Binary not base64": (lambda b: _binary(b).update(data="***"), 422, "value"),
    "Binary not DICOM": (lambda b: _set_kos(b, b"not a dicom file" * 20), 422, "value"),
    "Binary content type": (lambda b: _binary(b).update(contentType="text/plain"), 422, "value"),
    "hash mismatch": (
        lambda b: _document(b)["content"][0]["attachment"].update(hash="AAAA"),
        422,
        "value",
    ),
    "attachment url": (
        lambda b: _document(b)["content"][0]["attachment"].update(url="urn:uuid:other"),
        422,
        "value",
    ),
    "INS bad key": (
        lambda b: _set_subject(b, "urn:oid:1.2.250.1.213.1.4.10", SAMPLE_INS[:13] + "00"),
        422,
        "value",
    ),
    "INS short": (
        lambda b: _set_subject(b, "urn:oid:1.2.250.1.213.1.4.10", "27903512"),
        422,
        "value",
    ),
    "unknown INS OID": (lambda b: _set_subject(b, "urn:oid:1.2.3.4", SAMPLE_INS), 422, "value"),
    "patient system not an OID": (
        lambda b: _set_subject(b, "http://example.org/ins", SAMPLE_INS),
        422,
        "value",
    ),
    "identity not qualified": (
        lambda b: _document(b)["subject"].pop("extension"),
        422,
        "business-rule",
    ),
    "masterIdentifier not an OID": (
        lambda b: _document(b)["masterIdentifier"].update(value="urn:uuid:1234"),
        422,
        "value",
    ),
    "no masterIdentifier": (lambda b: _document(b).pop("masterIdentifier"), 400, "required"),
    "no study related": (
        lambda b: _document(b)["context"].update(related=[]),
        400,
        "required",
    ),
    "period end before start": (
        lambda b: _document(b)["context"]["period"].update(end="2023-01-01"),
        422,
        "value",
    ),
    "bad date": (
        lambda b: _document(b)["context"]["period"].update(start="15/01/2024"),
        422,
        "value",
    ),
    "unknown relatesTo": (
        lambda b: _document(b).update(
            relatesTo=[{"code": "appends", "target": {"reference": "DocumentReference/x"}}]
        ),
        400,
        "not-supported",
    ),
    "event code with space": (
        lambda b: _document(b)["context"]["event"][0]["coding"][0].update(code="C T"),
        422,
        "value",
    ),
    "no source box": (
        lambda b: (_document(b).pop("extension"), b["entry"][0]["resource"].pop("extension")),
        400,
        "required",
    ),
}


@pytest.mark.parametrize("case", sorted(_BROKEN))
def test_malformed_bundle_is_refused_and_nothing_is_stored(http: httpx.Client, case: str) -> None:
    manifest, kos = make_manifest()
    bundle = provide_document_bundle(manifest, kos)
    mutate, status, code = _BROKEN[case]
    mutate(bundle)
    response = post_bundle(http, bundle)
    assert response.status_code == status, response.text
    outcome = response.json()
    validate_fhir(outcome)
    assert outcome["issue"][0]["code"] == code
    assert outcome["issue"][0]["diagnostics"]
    assert find_by_kos(http, manifest.kos_sop_instance_uid) == []


def test_kos_of_another_instance_or_study_is_refused(http: httpx.Client) -> None:
    manifest, kos = make_manifest()
    for other in (
        build_kos("1.2.3.4.5", manifest.study_instance_uid),  # other SOP Instance UID
        build_kos(manifest.kos_sop_instance_uid, "1.2.3.4.6"),  # references another study
    ):
        bundle = provide_document_bundle(manifest, kos)
        _set_kos(bundle, other)
        response = post_bundle(http, bundle)
        assert response.status_code == httpx.codes.UNPROCESSABLE_ENTITY
    assert find_by_kos(http, manifest.kos_sop_instance_uid) == []


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"{not json", "application/fhir+json", 400),
        (b"[]", "application/fhir+json", 400),
        (b"{}", "text/plain", 415),
    ],
)
def test_unparseable_bodies_are_refused(
    http: httpx.Client, body: bytes, content_type: str, status: int
) -> None:
    response = http.post("/", content=body, headers={"Content-Type": content_type})
    assert response.status_code == status
    validate_fhir(response.json())


def test_production_registry_refuses_test_oids_and_accepts_production_ins(
    production_registry_url: str,
) -> None:
    with httpx.Client(base_url=production_registry_url) as http:
        manifest, kos = make_manifest()  # test INS-NIR OID
        response = post_bundle(http, provide_document_bundle(manifest, kos))
        assert response.status_code == httpx.codes.UNPROCESSABLE_ENTITY
        assert "test OID" in response.json()["issue"][0]["diagnostics"]
        assert find_by_kos(http, manifest.kos_sop_instance_uid) == []
        search_test = http.get(
            "/DocumentReference", params={"patient.identifier": patient_param(manifest)}
        )
        assert search_test.status_code == httpx.codes.UNPROCESSABLE_ENTITY
        real, kos = make_manifest(patient_oid=INS_NIR_OID, patient_value=make_ins(1234))
        assert publish(http, real, kos)


def test_production_registry_lets_only_the_publisher_replace_or_delete(
    production_registry_url: str,
) -> None:
    with httpx.Client(base_url=production_registry_url) as http:
        first, kos1 = make_manifest(patient_oid=INS_NIR_OID, patient_value=make_ins(5))
        entry_id = publish(http, first, kos1)
        second, kos2 = make_manifest(
            patient_oid=INS_NIR_OID,
            patient_value=make_ins(5),
            study_instance_uid=first.study_instance_uid,
            replaces=entry_id,
        )
        intruder = {REQUESTER_HEADER: "box-z"}
        refused = post_bundle(http, provide_document_bundle(second, kos2), **intruder)
        assert refused.status_code == httpx.codes.FORBIDDEN
        assert http.delete(f"/DocumentReference/{entry_id}", headers=intruder).status_code == 403
        assert http.delete(f"/DocumentReference/{entry_id}").status_code == 403
        owner = {REQUESTER_HEADER: "box-a"}
        assert publish(http, second, kos2, **owner)
        assert find_by_kos(http, second.kos_sop_instance_uid)[0]["status"] == "current"


def test_every_read_and_write_is_audited_without_the_ins(
    http: httpx.Client, audit_path: Path
) -> None:
    manifest, kos = make_manifest()
    entry_id = publish(http, manifest, kos, **{REQUESTER_HEADER: "box-a"})
    search(http, ("patient.identifier", patient_param(manifest)))
    http.get(f"/Binary/{entry_id}")
    http.get(f"/DocumentReference/{entry_id}")
    http.delete(f"/DocumentReference/{entry_id}")
    post_bundle(http, {"resourceType": "Bundle", "type": "batch"})
    text = audit_path.read_text()
    records = [json.loads(line) for line in text.splitlines()]
    assert [(r["event"], r["outcome"]) for r in records] == [
        ("ITI-65", "created"),
        ("ITI-67", "ok"),
        ("ITI-68", "ok"),
        ("read", "ok"),
        ("delete", "ok"),
        ("ITI-65", "refused"),
    ]
    assert records[0]["who"].startswith("box-a@127.0.0.1")
    assert records[0]["fields"]["entry"] == entry_id
    assert SAMPLE_INS not in text
    previous = "0" * 64
    for line, record in zip(text.splitlines(), records, strict=True):
        assert record["previous"] == previous
        previous = hashlib.sha256(line.encode()).hexdigest()
