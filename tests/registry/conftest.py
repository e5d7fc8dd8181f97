"""Registry fixtures: the same suite on SQLite and PostgreSQL, over real loopback HTTP.

``registry_url`` serves the registry *embedded*, the way the box does: mounted at ``/registry`` in
a parent app, served by uvicorn in a thread of the test process on a free 127.0.0.1 port.
``standalone_registry`` starts ``python -m registry.service.cli`` as its own process.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fhir.resources.R4B import get_fhir_model_class

from registry.client import RegistryClient
from registry.service.cli import create_standalone_app

LOOPBACK = "127.0.0.1"
_START_TIMEOUT_S = 20.0


def free_port() -> int:
    """Return a free TCP port on the loopback interface."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port


def validate_fhir(resource: dict[str, Any]) -> Any:
    """Validate FHIR JSON with the ``fhir.resources`` R4B (4.3) models; return the model.

    ``fhir.resources`` 8 ships R5 (default), R4B and STU3; R4B is the closest to our R4 JSON,
    and every element we use is unchanged between R4 and R4B.
    """
    return get_fhir_model_class(resource["resourceType"]).model_validate(resource)


class ThreadedServer:
    """uvicorn serving an app in a thread of this process, on a free loopback port."""

    def __init__(self, app: FastAPI) -> None:
        self.port = free_port()
        config = uvicorn.Config(app, host=LOOPBACK, port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> ThreadedServer:
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the registry server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    @property
    def url(self) -> str:
        """HTTP root URL."""
        return f"http://{LOOPBACK}:{self.port}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store: a SQLite file or a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def audit_path(tmp_path: Path) -> Path:
    """Where the registry under test writes its audit trail."""
    return tmp_path / "registry-audit.jsonl"


def _serve(database_url: str, audit_path: Path, *, production: bool) -> Iterator[str]:
    app = create_standalone_app(database_url, production=production, audit_path=audit_path)
    try:
        with ThreadedServer(app) as server:
            yield f"{server.url}/registry"
    finally:
        app.state.registry_store.close()


@pytest.fixture
def registry_url(database_url: str, audit_path: Path) -> Iterator[str]:
    """FHIR base of an embedded registry (test mode: test INS OIDs accepted)."""
    yield from _serve(database_url, audit_path, production=False)


@pytest.fixture
def production_registry_url(database_url: str, audit_path: Path) -> Iterator[str]:
    """FHIR base of an embedded registry in production mode."""
    yield from _serve(database_url, audit_path, production=True)


@pytest.fixture
def http(registry_url: str) -> Iterator[httpx.Client]:
    """A raw HTTP client on the registry's FHIR base."""
    with httpx.Client(base_url=registry_url, timeout=10) as client:
        yield client


@pytest.fixture
def client(registry_url: str) -> Iterator[RegistryClient]:
    """The box-side registry client on the embedded registry."""
    with RegistryClient(registry_url, timeout=10, requester="box-a") as registry:
        yield registry


@pytest.fixture
def standalone_registry(tmp_path: Path) -> Iterator[str]:
    """FHIR base of a registry started as its own process (``python -m registry.service.cli``)."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "registry.service.cli",
            "--http-port",
            str(port),
            "--database",
            f"sqlite:///{tmp_path / 'standalone.db'}",
            "--audit",
            str(tmp_path / "standalone-audit.jsonl"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://{LOOPBACK}:{port}/registry"
    try:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            try:
                if httpx.get(f"{base}/metadata", timeout=1).status_code == httpx.codes.OK:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                stderr = process.stderr.read().decode() if process.stderr else ""
                pytest.fail(f"standalone registry did not start: {stderr[-2000:]}")
            time.sleep(0.05)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stderr:
            process.stderr.close()
