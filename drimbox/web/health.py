"""Health endpoints (public: they reveal nothing but liveness and readiness)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from drimbox.errors import IndexUnavailableError
from drimbox.ports import Index

__all__ = ["create_health_router"]


def create_health_router(index: Index) -> APIRouter:
    """Return routes ``/health/live`` (process up) and ``/health/ready`` (index reachable)."""
    router = APIRouter(tags=["health"])

    @router.get("/health/live", summary="Liveness")
    async def live() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/health/ready", summary="Readiness: the index answers", response_model=None)
    async def ready() -> JSONResponse | dict[str, str]:
        try:
            await run_in_threadpool(index.statistics)
        except IndexUnavailableError:
            return JSONResponse({"status": "unavailable", "reason": "index"}, status_code=503)
        return {"status": "ok"}

    return router
