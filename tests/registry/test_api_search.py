"""ITI-67 contract: search parameters, paging, masking, errors (both databases)."""

from __future__ import annotations

from datetime import date
from typing import Any

import httpx
import pytest

from registry.models import REQUESTER_HEADER, Coding
from tests.registry.conftest import validate_fhir
from tests.registry.helpers import ENTITLED, patient_param, publish, search
from tests.registry.kos import make_ins, make_manifest

_KNEE = Coding("http://snomed.info/sct", "72696002", "Knee")


@pytest.fixture
def three_exams(http: httpx.Client) -> dict[str, str]:
    """A CT head (2024-01), an MR knee (2024-03) and an NM (2024-06) of one patient."""
    ids = {}
    exams: dict[str, dict[str, Any]] = {
        "ct": {"period_start": date(2024, 1, 15)},
        "mr": {"period_start": date(2024, 3, 2), "modalities": ("MR",), "regions": (_KNEE,)},
        "nm": {"period_start": date(2024, 6, 20), "modalities": ("NM",), "regions": ()},
    }
    for name, overrides in exams.items():
        manifest, kos = make_manifest(**overrides)
        ids[name] = publish(http, manifest, kos)
        ids[f"{name}-study"] = manifest.study_instance_uid
        ids[f"{name}-accession"] = manifest.accession_number or ""
    return ids


def _ids(http: httpx.Client, *params: tuple[str, str]) -> list[str]:
    manifest, _ = make_manifest()
    return [r["id"] for r in search(http, ("patient.identifier", patient_param(manifest)), *params)]


def test_search_by_patient_returns_newest_exam_first(
    http: httpx.Client, three_exams: dict[str, str]
) -> None:
    assert _ids(http) == [three_exams["nm"], three_exams["mr"], three_exams["ct"]]


def test_search_by_other_patient_finds_nothing(
    http: httpx.Client, three_exams: dict[str, str]
) -> None:
    other = f"urn:oid:1.2.250.1.213.1.4.10|{make_ins(99)}"
    assert search(http, ("patient.identifier", other)) == []


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ([("event", "http://dicom.nema.org/resources/ontology/DCM|MR")], ["mr"]),
        ([("event", "CT,NM")], ["nm", "ct"]),
        ([("event", "http://snomed.info/sct|72696002")], ["mr"]),
        ([("event", "MR"), ("event", "69536005")], []),
        ([("period", "ge2024-02-01")], ["nm", "mr"]),
        ([("period", "le2024-03-02")], ["mr", "ct"]),
        ([("period", "gt2024-01-15"), ("period", "lt2024-06-20")], ["mr"]),
        ([("period", "2024-06-20")], ["nm"]),
        ([("type", "http://loinc.org|18748-4")], ["nm", "mr", "ct"]),
        ([("type", "http://loinc.org|11111-1")], []),
        ([("status", "superseded,entered-in-error")], []),
    ],
)
def test_search_filters(
    http: httpx.Client,
    three_exams: dict[str, str],
    params: list[tuple[str, str]],
    expected: list[str],
) -> None:
    assert _ids(http, *params) == [three_exams[name] for name in expected]


def test_search_by_related_study_uid_or_accession(
    http: httpx.Client, three_exams: dict[str, str]
) -> None:
    study = f"urn:dicom:uid|urn:oid:{three_exams['mr-study']}"
    assert _ids(http, ("related", study)) == [three_exams["mr"]]
    accession = three_exams["ct-accession"]
    assert _ids(http, ("related", accession)) == [three_exams["ct"]]


def test_paging_follows_next_links_without_gaps_or_duplicates(http: httpx.Client) -> None:
    published = set()
    for day in (1, 1, 1, 2, 3):  # same dates exercise the keyset tie-break
        manifest, kos = make_manifest(period_start=date(2024, 5, day))
        published.add(publish(http, manifest, kos))
    response = http.get(
        "/DocumentReference",
        params={"patient.identifier": patient_param(manifest), "_count": "2"},
    )
    seen: list[str] = []
    pages = 0
    while True:
        assert response.status_code == httpx.codes.OK, response.text
        body = response.json()
        validate_fhir(body)
        seen += [entry["resource"]["id"] for entry in body.get("entry", [])]
        pages += 1
        links = {link["relation"]: link["url"] for link in body["link"]}
        if "next" not in links:
            break
        assert links["next"].startswith(str(http.base_url).rstrip("/") + "/DocumentReference?")
        response = httpx.get(links["next"])
    assert pages == 3
    assert len(seen) == len(set(seen)) == 5
    assert set(seen) == published


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({}, 400, "required"),
        ({"patient.identifier": "urn:oid:1.2.250.1.213.1.4.10|279035121518900"}, 422, "value"),
        ({"patient.identifier": "1.2.250.1.213.1.4.10|279035121518989"}, 422, "value"),
        ({"patient.identifier": "urn:oid:1.2.3|279035121518989"}, 422, "value"),
        ({"patient": "123"}, 400, "not-supported"),
        ({"_count": "0"}, 422, "value"),
        ({"_count": "many"}, 422, "value"),
        ({"period": "sa2024-01-01"}, 400, "not-supported"),
        ({"period": "ge2024-13-01"}, 422, "value"),
        ({"status": "deleted"}, 422, "value"),
        ({"_cursor": "garbage!"}, 400, "invalid"),
    ],
)
def test_malformed_searches_answer_an_operation_outcome(
    http: httpx.Client, params: dict[str, str], status: int, code: str
) -> None:
    if params and "patient.identifier" not in params and "patient" not in params:
        params = {"patient.identifier": "urn:oid:1.2.250.1.213.1.4.10|279035121518989", **params}
    response = http.get("/DocumentReference", params=params)
    assert response.status_code == status, response.text
    outcome = response.json()
    validate_fhir(outcome)
    assert outcome["issue"][0]["code"] == code
    assert outcome["issue"][0]["diagnostics"]


def test_masked_entries_are_visible_only_to_entitled_searches(http: httpx.Client) -> None:
    visible, kos1 = make_manifest()
    masked, kos2 = make_manifest(masked=True, period_start=date(2024, 2, 1))
    visible_id, masked_id = publish(http, visible, kos1), publish(http, masked, kos2)
    patient = ("patient.identifier", patient_param(visible))
    assert [r["id"] for r in search(http, patient)] == [visible_id]
    entitled = search(http, patient, **ENTITLED)
    assert [r["id"] for r in entitled] == [masked_id, visible_id]
    assert entitled[0]["securityLabel"][1]["coding"][0]["code"] == "MASQUE_PS"
    for requester in ("1750803447", "box-a"):  # the custodian, the source box
        found = search(http, patient, **{REQUESTER_HEADER: requester})
        assert [r["id"] for r in found] == [masked_id, visible_id]
    assert [r["id"] for r in search(http, patient, **{REQUESTER_HEADER: "box-z"})] == [visible_id]


def test_masked_entries_cannot_be_read_or_retrieved_without_entitlement(
    http: httpx.Client,
) -> None:
    masked, kos = make_manifest(masked=True)
    entry_id = publish(http, masked, kos)
    for path in (f"/DocumentReference/{entry_id}", f"/Binary/{entry_id}"):
        assert http.get(path).status_code == httpx.codes.NOT_FOUND
        assert http.get(path, headers=ENTITLED).status_code == httpx.codes.OK
