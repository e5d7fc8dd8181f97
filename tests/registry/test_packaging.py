"""The registry package stands alone and stays light for its users; its audit chain is linear."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from psycopg import connect, sql

from registry.client import RegistryClient
from registry.errors import RegistryUnavailableError
from registry.service._audit import RegistryAudit
from registry.service.cli import create_standalone_app
from tests.fixtures.postgres import PostgresServer
from tests.registry.conftest import ThreadedServer
from tests.registry.kos import make_manifest


def test_importing_the_wire_contract_loads_neither_http_nor_sql_nor_the_box() -> None:
    probe = (
        "import sys, registry, registry.models, registry.errors;"
        "heavy = {'httpx', 'sqlalchemy', 'fastapi', 'drimbox', 'dicomweb'} & set(sys.modules);"
        "print(sorted(heavy))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_audit_chain_stays_linear_with_concurrent_writers(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    writers = [RegistryAudit(path) for _ in range(4)]  # like 4 worker processes

    def write(index: int) -> None:
        writers[index % 4].record("ITI-67", "ok", who=f"w{index % 4}", count=index)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(200)))
    lines = path.read_text().splitlines()
    assert len(lines) == 200
    previous = "0" * 64
    for line in lines:
        assert json.loads(line)["previous"] == previous
        previous = hashlib.sha256(line.encode()).hexdigest()


def test_database_outage_is_answered_503_and_seen_as_unavailable(
    postgres_server: PostgresServer, postgres_url: str, tmp_path: Path
) -> None:
    app = create_standalone_app(postgres_url, audit_path=tmp_path / "audit.jsonl")
    try:
        with (
            ThreadedServer(app) as server,
            RegistryClient(f"{server.url}/registry", timeout=10) as client,
        ):
            manifest, kos = make_manifest()
            client.publish(manifest, kos)
            database = postgres_url.rsplit("/", 1)[1]
            with connect(
                host=postgres_server.host,
                port=postgres_server.port,
                user=postgres_server.user,
                dbname="postgres",
                autocommit=True,
            ) as admin:
                admin.execute(
                    sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(database))
                )
            with pytest.raises(RegistryUnavailableError, match="503"):
                client.publish(*make_manifest())
    finally:
        app.state.registry_store.close()
