"""The ITI-65 publish route served as plain ASGI, mounted like the box does, and its store path."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.exc import DBAPIError

from registry._fhir import FHIR_JSON
from registry.client import RegistryClient
from registry.service.app import create_registry_app
from registry.service.store import EntryQuery, RegistryStore
from tests.registry.conftest import ThreadedServer
from tests.registry.kos import make_manifest

_MOUNT = "/national/registry"


def test_publish_through_a_mount_point_answers_urls_under_that_mount(
    database_url: str, tmp_path: Path
) -> None:
    registry = create_registry_app(database_url, audit_path=tmp_path / "audit.jsonl")
    root = FastAPI(openapi_url=None)
    root.mount(_MOUNT, registry)  # as the box mounts it: not the standalone root
    try:
        with ThreadedServer(root) as server, RegistryClient(f"{server.url}{_MOUNT}") as client:
            manifest, kos = make_manifest()
            entry_id = client.publish(manifest, kos)
            assert client.publish(manifest, kos) == entry_id  # idempotent
            entry = client.read(entry_id)
            assert entry.content_url == f"{server.url}{_MOUNT}/Binary/{entry_id}"
            assert client.retrieve(entry_id) == kos
    finally:
        registry.state.registry_store.close()


def test_publish_route_refuses_what_it_cannot_read_and_stores_nothing(
    registry_url: str, database_url: str
) -> None:
    manifest, _ = make_manifest()
    with httpx.Client(timeout=10) as http:
        not_json = http.post(f"{registry_url}/", content=b"{", headers={"Content-Type": FHIR_JSON})
        not_fhir = http.post(f"{registry_url}/", content=b"{}", headers={"Content-Type": "text/x"})
        other = http.post(f"{registry_url}/DocumentReference", content=b"{}")
    assert not_json.status_code == httpx.codes.BAD_REQUEST
    assert not_json.json()["resourceType"] == "OperationOutcome"
    assert not_fhir.status_code == httpx.codes.UNSUPPORTED_MEDIA_TYPE
    assert other.status_code == httpx.codes.METHOD_NOT_ALLOWED  # FastAPI routes the rest
    store = RegistryStore(database_url)
    try:
        patient = (manifest.patient_oid, manifest.patient_value)
        assert store.search(EntryQuery(patient=patient, count=10))[0] == []
    finally:
        store.close()


def test_publish_statement_errors_are_sqlalchemy_errors_and_the_store_still_works(
    postgres_url: str,
) -> None:
    store = RegistryStore(postgres_url)
    try:
        statements = store._statements
        assert statements is not None
        with pytest.raises(DBAPIError):
            statements.first_row("SELECT no_such_column FROM entries", {})
        manifest, kos = make_manifest()
        assert store.publish(manifest, kos).created  # the failed connection was replaced
        assert not store.publish(manifest, kos).created
    finally:
        store.close()
