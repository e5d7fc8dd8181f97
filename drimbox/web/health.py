"""Health endpoints (public: they reveal nothing but liveness and readiness)."""

from __future__ import annotations

import threading

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from drimbox.errors import IndexUnavailableError
from drimbox.ports import Index

__all__ = ["create_health_router"]


def create_health_router(index: Index, started: threading.Event | None = None) -> APIRouter:
    """Return routes ``/health/live`` (process up) and ``/health/ready``.

    Ready means: every listener and worker of the box has started (``started`` is set: the
    HTTP server answers before the DIMSE receiver processes are up) and the index answers.
    """
    router = APIRouter(tags=["health"])

    @router.get("/health/live", summary="Liveness")
    async def live() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/health/ready", summary="Readiness: the index answers", response_model=None)
    async def ready() -> JSONResponse | dict[str, str]:
        if started is not None and not started.is_set():
            return JSONResponse({"status": "unavailable", "reason": "starting"}, status_code=503)
        try:
            await run_in_threadpool(index.statistics)
        except IndexUnavailableError:
            return JSONResponse({"status": "unavailable", "reason": "index"}, status_code=503)
        return {"status": "ok"}

    return router
