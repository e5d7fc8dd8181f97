"""Behaviours the fast paths must keep: durable audit, pool recovery, COPY loading (both DBs)."""

from __future__ import annotations

import hashlib
import json
import random
import uuid
from pathlib import Path

import httpx
from psycopg import connect

from registry.client import RegistryClient
from registry.loader import _uuid4_text, load_synthetic_entries, synthetic_entries
from registry.models import EntryStatus, SearchQuery
from registry.service._audit import RegistryAudit
from registry.service.cli import create_standalone_app
from registry.service.store import EntryQuery, RegistryStore, entry_row
from tests.fixtures.postgres import PostgresServer
from tests.registry.conftest import ThreadedServer
from tests.registry.kos import make_manifest

_GENESIS = "0" * 64


def _chain(path: Path) -> list[dict[str, object]]:
    lines = path.read_text().splitlines()
    previous = _GENESIS
    for line in lines:
        assert json.loads(line)["previous"] == previous
        previous = hashlib.sha256(line.encode()).hexdigest()
    return [json.loads(line) for line in lines]


def test_audit_continues_the_chain_written_by_another_writer(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    first, second = RegistryAudit(path), RegistryAudit(path)  # like two worker processes
    first.record("ITI-67", "ok", who="a")
    second.record("ITI-65", "created", who="b", durable=True)
    first.record("ITI-68", "ok", who="a")  # its cached hash is stale: it must re-read
    first.close()
    second.close()
    assert [r["who"] for r in _chain(path)] == ["a", "b", "a"]


def test_audit_starts_a_new_chain_when_its_file_is_rotated(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = RegistryAudit(path)
    audit.record("ITI-65", "created", who="a", durable=True)
    path.rename(tmp_path / "audit.1.jsonl")
    audit.record("ITI-65", "created", who="b", durable=True)
    audit.close()
    assert [r["who"] for r in _chain(tmp_path / "audit.1.jsonl")] == ["a"]
    assert [r["who"] for r in _chain(path)] == ["b"]


def test_synthetic_entry_ids_are_random_uuid_text() -> None:
    rng = random.Random(5)
    for _ in range(2000):
        bits = rng.getrandbits(128)
        assert _uuid4_text(bits) == str(uuid.UUID(int=bits, version=4))


def test_bulk_loaded_rows_are_the_rows_a_publish_would_store(database_url: str) -> None:
    store = RegistryStore(database_url)
    try:
        assert load_synthetic_entries(store, 120, seed=9, batch_size=50) == 120
        for manifest, kos, entry_id in synthetic_entries(120, seed=9):
            stored = store.get(entry_id)
            assert stored is not None
            assert stored.manifest == manifest
            assert stored.status is EntryStatus.CURRENT
            assert store.content(entry_id) == kos
            row = entry_row(
                manifest, entry_id=entry_id, kos=kos, now=stored.created, replaces_id=None
            )
            assert (stored.content_sha256, stored.content_size) == (
                row["content_sha256"],
                row["content_size"],
            )
        found, _ = store.search(
            EntryQuery(kos_sop_instance_uid=manifest.kos_sop_instance_uid, include_masked=True)
        )
        assert [entry.entry_id for entry in found] == [entry_id]
    finally:
        store.close()


def test_registry_recovers_after_its_database_connections_are_killed(
    postgres_server: PostgresServer, postgres_url: str, tmp_path: Path
) -> None:
    app = create_standalone_app(postgres_url, audit_path=tmp_path / "audit.jsonl")
    database = postgres_url.rsplit("/", 1)[1]
    try:
        with (
            ThreadedServer(app) as server,
            httpx.Client(base_url=f"{server.url}/registry", timeout=10) as http,
            RegistryClient(f"{server.url}/registry", timeout=10) as client,
        ):
            manifest, kos = make_manifest()
            client.publish(manifest, kos)
            with connect(
                host=postgres_server.host,
                port=postgres_server.port,
                user=postgres_server.user,
                dbname="postgres",
                autocommit=True,
            ) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    (database,),
                )
            params = {
                "patient.identifier": f"urn:oid:{manifest.patient_oid}|{manifest.patient_value}"
            }
            first = http.get("/DocumentReference", params=params)
            assert first.status_code in {httpx.codes.OK, httpx.codes.SERVICE_UNAVAILABLE}
            query = SearchQuery(manifest.patient_value, manifest.patient_oid)
            assert [e.manifest.kos_sop_instance_uid for e in client.search(query)] == [
                manifest.kos_sop_instance_uid
            ]
            second, second_kos = make_manifest()
            assert client.publish(second, second_kos)
    finally:
        app.state.registry_store.close()
