"""Standalone start of the registry (called by ``drimbox registry serve``)."""

from __future__ import annotations

import argparse
import os
import socket
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.supervisors import Multiprocess

from registry.service.app import create_registry_app, route_path

__all__ = [
    "DEFAULT_DATABASE_URL",
    "DEFAULT_HTTP_PORT",
    "REGISTRY_PATH",
    "app_from_environment",
    "create_standalone_app",
    "main",
    "serve_registry",
]

#: Default port of a standalone registry (``drimbox registry serve --http-port``).
DEFAULT_HTTP_PORT = 8090
#: Default store: a SQLite file in the working directory.
DEFAULT_DATABASE_URL = "sqlite:///drimbox-registry.db"
#: Where the FHIR base lives under the HTTP root, standalone and embedded alike.
REGISTRY_PATH = "/registry"
#: uvicorn's HTTP parser and event loop, named rather than left to ``auto``: a missing
#: httptools or uvloop is then an error at start, not a silently slower server (uvloop: ≈ 0.1 ms
#: less CPU per publish than asyncio's loop).
_HTTP_IMPLEMENTATION = "httptools"
_EVENT_LOOP = "uvloop"
_ENV_DATABASE = "DRIMBOX_REGISTRY_DATABASE_URL"
_ENV_PRODUCTION = "DRIMBOX_REGISTRY_PRODUCTION"
_ENV_AUDIT = "DRIMBOX_REGISTRY_AUDIT"


class _StandaloneRoot(FastAPI):
    """HTTP root whose requests under :data:`REGISTRY_PATH` go straight to the registry app.

    The same scope as Starlette's ``Mount`` gives, without the root's middleware stack and
    router on every request; anything else (lifespan, other paths) is the root's own.
    """

    registry: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.registry is not None
            and scope["type"] == "http"
            and route_path(scope).startswith(REGISTRY_PATH + "/")
        ):
            root = scope.get("root_path", "")
            child = {
                **scope,
                "app_root_path": scope.get("app_root_path", root),
                "root_path": root + REGISTRY_PATH,
            }
            await self.registry(child, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_standalone_app(
    database_url: str, *, production: bool = False, audit_path: Path | None = None
) -> FastAPI:
    """Return an HTTP root app with the registry mounted at :data:`REGISTRY_PATH`."""
    registry = create_registry_app(database_url, production=production, audit_path=audit_path)
    root = _StandaloneRoot(openapi_url=None, lifespan=registry.router.lifespan_context)
    root.mount(REGISTRY_PATH, registry)
    root.registry = registry
    root.state.registry_store = registry.state.registry_store
    return root


def app_from_environment() -> FastAPI:
    """uvicorn factory for worker processes: the settings come from ``DRIMBOX_REGISTRY_*``."""
    audit = os.environ.get(_ENV_AUDIT)
    return create_standalone_app(
        os.environ[_ENV_DATABASE],
        production=os.environ.get(_ENV_PRODUCTION) == "1",
        audit_path=Path(audit) if audit else None,
    )


def serve_registry(
    host: str = "127.0.0.1",
    port: int = DEFAULT_HTTP_PORT,
    database_url: str = DEFAULT_DATABASE_URL,
    *,
    production: bool = False,
    audit_path: Path | None = None,
    workers: int = 1,
    access_log: bool = False,
) -> None:
    """Serve the registry until interrupted, its FHIR base at ``http://<host>:<port>/registry``.

    Parameters
    ----------
    host, port
        Where to listen (loopback by default).
    database_url
        SQLAlchemy URL of the store.
    production
        Production rules (test INS OIDs refused; replace/delete restricted to the publisher).
    audit_path
        JSON-lines audit trail; ``None`` logs audit records only.
    workers
        HTTP worker processes sharing the store (stateless; the audit chain is file-locked).
    access_log
        Log one line per HTTP request (off by default: the audit trail already records every
        request, and the log line cost about as much CPU as an ITI-67 search's rendering).
    """
    root = create_standalone_app(database_url, production=production, audit_path=audit_path)
    dialect = root.state.registry_store.dialect
    print(f"drimbox registry: FHIR base http://{host}:{port}{REGISTRY_PATH} ({dialect} store)")
    if workers == 1:
        uvicorn.run(
            root,
            host=host,
            port=port,
            http=_HTTP_IMPLEMENTATION,
            loop=_EVENT_LOOP,
            log_level="info",
            access_log=access_log,
        )
        return
    root.state.registry_store.close()  # the workers build their own
    os.environ[_ENV_DATABASE] = database_url
    os.environ[_ENV_PRODUCTION] = "1" if production else "0"
    if audit_path is not None:
        os.environ[_ENV_AUDIT] = str(audit_path)
    config = uvicorn.Config(
        "registry.service.cli:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        http=_HTTP_IMPLEMENTATION,
        loop=_EVENT_LOOP,
        log_level="info",
        access_log=access_log,
    )
    listener = config.bind_socket()
    # uvicorn's shared listener is created with protocol 0, so asyncio does not set
    # TCP_NODELAY on the connections it accepts (it checks IPPROTO_TCP): every answer written
    # in two parts then waited for the client's delayed ACK (~40 ms per request; measured 75
    # publishes/s with 2 workers against 260/s with 1). Linux copies the option to accepted
    # sockets.
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    Multiprocess(config, sockets=[listener]).run()


def main(argv: list[str] | None = None) -> None:
    """``python -m registry.service.cli [--host H] [--http-port P] [--database URL]``."""
    parser = argparse.ArgumentParser(description="Serve the drimbox national registry (IHE MHD).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--http-port", type=int, default=DEFAULT_HTTP_PORT)
    parser.add_argument("--database", default=DEFAULT_DATABASE_URL, help="SQLAlchemy URL")
    parser.add_argument("--production", action="store_true", help="refuse test INS OIDs")
    parser.add_argument("--audit", type=Path, default=None, help="JSON-lines audit trail")
    parser.add_argument("--workers", type=int, default=1, help="HTTP worker processes")
    parser.add_argument("--access-log", action="store_true", help="log every HTTP request")
    args = parser.parse_args(argv)
    serve_registry(
        args.host,
        args.http_port,
        args.database,
        production=args.production,
        audit_path=args.audit,
        workers=args.workers,
        access_log=args.access_log,
    )


if __name__ == "__main__":
    main()
