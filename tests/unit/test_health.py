"""Health endpoints: liveness at once, readiness only once the box has started."""

from __future__ import annotations

import asyncio
import threading

import httpx
from fastapi import FastAPI

from drimbox.index import MemoryIndex
from drimbox.web.health import create_health_router


async def _get(app: FastAPI, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://box") as client:
        return await client.get(path)


def test_ready_only_once_every_listener_and_worker_has_started() -> None:
    started = threading.Event()
    app = FastAPI()
    app.include_router(create_health_router(MemoryIndex(), started))

    assert asyncio.run(_get(app, "/health/live")).status_code == 200
    starting = asyncio.run(_get(app, "/health/ready"))
    assert starting.status_code == 503
    assert starting.json() == {"status": "unavailable", "reason": "starting"}

    started.set()
    assert asyncio.run(_get(app, "/health/ready")).json() == {"status": "ok"}

    started.clear()  # stopping
    assert asyncio.run(_get(app, "/health/ready")).status_code == 503
