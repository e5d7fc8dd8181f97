"""ITI-65 contract: publish, idempotent republish, replace chains, delete, retrieve (both DBs)."""

from __future__ import annotations

import base64

import httpx

from registry._fhir import provide_document_bundle
from tests.registry.conftest import validate_fhir
from tests.registry.helpers import find_by_kos, patient_param, post_bundle, publish, search
from tests.registry.kos import make_manifest


def test_publish_answers_a_transaction_response_with_locations(http: httpx.Client) -> None:
    manifest, kos = make_manifest()
    bundle = provide_document_bundle(manifest, kos)
    validate_fhir(bundle)  # what the client sends is valid FHIR too
    response = post_bundle(http, bundle)
    assert response.status_code == httpx.codes.OK
    body = response.json()
    validate_fhir(body)
    assert body["type"] == "transaction-response"
    assert [e["response"]["status"] for e in body["entry"]] == ["201 Created"] * 3
    entry_id = body["entry"][1]["response"]["location"].split("/")[1]
    assert body["entry"][2]["response"]["location"] == f"Binary/{entry_id}"


def test_published_document_reference_carries_the_manifest_metadata(http: httpx.Client) -> None:
    manifest, kos = make_manifest(modalities=("CT", "SR"))
    entry_id = publish(http, manifest, kos)
    response = http.get(f"/DocumentReference/{entry_id}")
    assert response.status_code == httpx.codes.OK
    resource = response.json()
    validate_fhir(resource)
    assert resource["status"] == "current"
    assert resource["masterIdentifier"]["value"] == f"urn:oid:{manifest.kos_sop_instance_uid}"
    assert resource["subject"]["identifier"] == {
        "system": f"urn:oid:{manifest.patient_oid}",
        "value": manifest.patient_value,
    }
    related = [r["identifier"]["value"] for r in resource["context"]["related"]]
    assert related == [f"urn:oid:{manifest.study_instance_uid}", manifest.accession_number]
    codes = [e["coding"][0]["code"] for e in resource["context"]["event"]]
    assert codes == ["CT", "SR", "69536005"]
    assert resource["content"][0]["attachment"]["size"] == len(kos)
    assert resource["content"][0]["attachment"]["url"].endswith(f"/registry/Binary/{entry_id}")
    assert resource["custodian"]["identifier"]["value"] == "1750803447"


def test_publishing_the_same_manifest_twice_is_idempotent(http: httpx.Client) -> None:
    manifest, kos = make_manifest()
    first = publish(http, manifest, kos)
    response = post_bundle(http, provide_document_bundle(manifest, kos))
    assert [e["response"]["status"] for e in response.json()["entry"]] == ["200 OK"] * 3
    assert publish(http, manifest, kos) == first
    assert len(find_by_kos(http, manifest.kos_sop_instance_uid)) == 1


def test_same_kos_uid_with_other_bytes_is_a_conflict(http: httpx.Client) -> None:
    manifest, kos = make_manifest()
    publish(http, manifest, kos)
    _, other = make_manifest(
        kos_sop_instance_uid=manifest.kos_sop_instance_uid,
        study_instance_uid=manifest.study_instance_uid,
    )
    response = post_bundle(http, provide_document_bundle(manifest, other))
    assert response.status_code == httpx.codes.CONFLICT
    validate_fhir(response.json())
    assert "relatesTo" in response.json()["issue"][0]["diagnostics"]
    stored = find_by_kos(http, manifest.kos_sop_instance_uid)
    assert [r["content"][0]["attachment"]["size"] for r in stored] == [len(kos)]


def test_replace_chain_supersedes_each_predecessor(http: httpx.Client) -> None:
    first, kos1 = make_manifest()
    id1 = publish(http, first, kos1)
    second, kos2 = make_manifest(study_instance_uid=first.study_instance_uid, replaces=id1)
    id2 = publish(http, second, kos2)
    # the third replaces by KOS SOP Instance UID instead of entry id
    third, kos3 = make_manifest(
        study_instance_uid=first.study_instance_uid, replaces=second.kos_sop_instance_uid
    )
    id3 = publish(http, third, kos3)
    statuses = {
        r["id"]: (r["status"], r.get("relatesTo"))
        for r in search(http, ("patient.identifier", patient_param(first)))
    }
    assert statuses[id1] == ("superseded", None)
    assert statuses[id2][0] == "superseded"
    assert statuses[id3] == (
        "current",
        [{"code": "replaces", "target": {"reference": f"DocumentReference/{id2}"}}],
    )
    current = search(http, ("patient.identifier", patient_param(first)), ("status", "current"))
    assert [r["id"] for r in current] == [id3]


def test_replacing_a_superseded_entry_is_a_conflict_and_stores_nothing(
    http: httpx.Client,
) -> None:
    first, kos1 = make_manifest()
    id1 = publish(http, first, kos1)
    second, kos2 = make_manifest(study_instance_uid=first.study_instance_uid, replaces=id1)
    publish(http, second, kos2)
    late, kos3 = make_manifest(study_instance_uid=first.study_instance_uid, replaces=id1)
    response = post_bundle(http, provide_document_bundle(late, kos3))
    assert response.status_code == httpx.codes.CONFLICT
    validate_fhir(response.json())
    assert find_by_kos(http, late.kos_sop_instance_uid) == []


def test_replacing_an_unknown_entry_is_not_found(http: httpx.Client) -> None:
    manifest, kos = make_manifest(replaces="no-such-entry")
    response = post_bundle(http, provide_document_bundle(manifest, kos))
    assert response.status_code == httpx.codes.NOT_FOUND
    assert response.json()["issue"][0]["code"] == "not-found"
    assert find_by_kos(http, manifest.kos_sop_instance_uid) == []


def test_replacing_another_patients_entry_is_a_conflict(http: httpx.Client) -> None:
    from tests.registry.kos import make_ins

    first, kos1 = make_manifest()
    id1 = publish(http, first, kos1)
    other, kos2 = make_manifest(patient_value=make_ins(77), replaces=id1)
    response = post_bundle(http, provide_document_bundle(other, kos2))
    assert response.status_code == httpx.codes.CONFLICT
    assert "another patient" in response.json()["issue"][0]["diagnostics"]


def test_delete_marks_entered_in_error_and_keeps_history(http: httpx.Client) -> None:
    manifest, kos = make_manifest()
    entry_id = publish(http, manifest, kos)
    response = http.delete(f"/DocumentReference/{entry_id}")
    assert response.status_code == httpx.codes.OK
    validate_fhir(response.json())
    assert response.json()["status"] == "entered-in-error"
    assert http.delete(f"/DocumentReference/{entry_id}").status_code == httpx.codes.OK
    patient = ("patient.identifier", patient_param(manifest))
    assert search(http, patient, ("status", "current")) == []
    history = search(http, ("patient.identifier", patient_param(manifest)))
    assert [(r["id"], r["status"]) for r in history] == [(entry_id, "entered-in-error")]
    republished = post_bundle(http, provide_document_bundle(manifest, kos))
    assert republished.status_code == httpx.codes.CONFLICT


def test_delete_of_unknown_or_superseded_entries_is_refused(http: httpx.Client) -> None:
    assert http.delete("/DocumentReference/nope").status_code == httpx.codes.NOT_FOUND
    first, kos1 = make_manifest()
    id1 = publish(http, first, kos1)
    second, kos2 = make_manifest(study_instance_uid=first.study_instance_uid, replaces=id1)
    publish(http, second, kos2)
    response = http.delete(f"/DocumentReference/{id1}")
    assert response.status_code == httpx.codes.CONFLICT
    validate_fhir(response.json())


def test_retrieve_returns_the_kos_byte_identical(http: httpx.Client) -> None:
    manifest, kos = make_manifest()
    entry_id = publish(http, manifest, kos)
    response = http.get(f"/Binary/{entry_id}", headers={"Accept": "application/dicom"})
    assert response.status_code == httpx.codes.OK
    assert response.headers["content-type"] == "application/dicom"
    assert response.content == kos
    as_fhir = http.get(f"/Binary/{entry_id}", headers={"Accept": "application/fhir+json"})
    validate_fhir(as_fhir.json())
    assert base64.b64decode(as_fhir.json()["data"]) == kos


def test_retrieve_and_read_of_unknown_ids_answer_not_found(http: httpx.Client) -> None:
    for path in ("/Binary/unknown", "/DocumentReference/unknown"):
        response = http.get(path)
        assert response.status_code == httpx.codes.NOT_FOUND
        validate_fhir(response.json())


def test_capability_statement_is_valid_fhir(http: httpx.Client) -> None:
    response = http.get("/metadata")
    assert response.status_code == httpx.codes.OK
    validate_fhir(response.json())
