"""Health endpoints: liveness at once, readiness only once the box has started."""

from __future__ import annotations

import threading

from fastapi import FastAPI
from fastapi.testclient import TestClient

from drimbox.index import MemoryIndex
from drimbox.web.health import create_health_router


def _client(started: threading.Event) -> TestClient:
    app = FastAPI()
    app.include_router(create_health_router(MemoryIndex(), started))
    return TestClient(app)


def test_ready_only_once_every_listener_and_worker_has_started() -> None:
    started = threading.Event()
    client = _client(started)

    assert client.get("/health/live").status_code == 200
    starting = client.get("/health/ready")
    assert starting.status_code == 503
    assert starting.json() == {"status": "unavailable", "reason": "starting"}

    started.set()
    assert client.get("/health/ready").json() == {"status": "ok"}

    started.clear()  # stopping
    assert client.get("/health/ready").status_code == 503
