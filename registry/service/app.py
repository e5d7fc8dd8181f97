"""The registry's HTTP API: IHE MHD on FHIR R4 JSON (ITI-65, ITI-67, ITI-68), as a FastAPI app.

Routes, relative to the FHIR base (``<http root>/registry`` when mounted by the box):

* ``POST /`` - ITI-65 Provide Document Bundle (transaction: List + DocumentReference + Binary);
* ``GET /DocumentReference?...`` - ITI-67 Find Document References (searchset Bundle);
* ``GET /DocumentReference/{id}`` - read one entry;
* ``DELETE /DocumentReference/{id}`` - de-publish (status ``entered-in-error``, history kept);
* ``GET /Binary/{id}`` - ITI-68 Retrieve Document (the KOS, ``application/dicom``);
* ``GET /metadata`` - the CapabilityStatement.

Masking: masked entries are returned only to requests carrying ``X-Registry-Entitlement: masked``
or whose ``X-Registry-Requester`` is the entry's custodian or source box. In production mode,
replace and delete are allowed only to the entry's source box or custodian. These headers are set
by the authenticating gateway in front of the registry (see the README).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from sqlalchemy.exc import DBAPIError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from registry._fhir import FHIR_JSON, BundleError, operation_outcome
from registry._fhir_read import read_submission
from registry.models import ENTITLEMENT_HEADER, MASKED_ENTITLEMENT, REQUESTER_HEADER
from registry.service._audit import RegistryAudit, patient_digest
from registry.service._resources import (
    binary_resource,
    capability_statement,
    searchset,
    stored_document_reference,
    transaction_response,
)
from registry.service._rules import check_submission
from registry.service._search import parse_search
from registry.service.store import (
    EntryConflictError,
    EntryNotFoundError,
    EntryQuery,
    RegistryStore,
    StoredEntry,
)

__all__ = ["MAX_BUNDLE_BYTES", "create_registry_app"]

#: Largest ITI-65 Bundle accepted (a KOS of a very large study is a few MiB; base64 adds 1/3).
MAX_BUNDLE_BYTES = 64 * 1024 * 1024
_DICOM = "application/dicom"
_T = TypeVar("_T")
#: Threads running the store and audit calls of requests (anyio's default capacity).
_BLOCKING_THREADS = 40
#: Shared by every registry app of the process; its threads end with the interpreter.
_BLOCKING_CALLS = ThreadPoolExecutor(_BLOCKING_THREADS, thread_name_prefix="registry")
_CLIENT_ERRORS = {"structure", "required", "invalid", "not-supported", "too-long"}
#: Events that change the registry: their audit records are on disk before the answer.
_WRITES = {"ITI-65", "delete"}


class _RejectionError(Exception):
    def __init__(self, status: int, code: str, message: str, expression: str = "") -> None:
        super().__init__(message)
        self.status, self.code, self.expression = status, code, expression


def route_path(scope: Scope) -> str:
    """Return the request path below the app's mount point (Starlette's ``get_route_path``)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path != root and path[len(root)] == "/":
        return path[len(root) :]
    return "" if root and path == root else path


class _RegistryApp(FastAPI):
    """The registry's FastAPI app, whose ITI-65 publish is served as plain ASGI.

    ``POST /`` is the hot path: routed here, it skips Starlette's middleware stack, FastAPI's
    router, dependency solving and endpoint wrappers (≈ 0.2 ms of CPU per publish); every other
    request goes through FastAPI as usual.
    """

    publish_route: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.publish_route is not None
            and scope["type"] == "http"
            and scope["method"] == "POST"
            and route_path(scope) == "/"
        ):
            await self.publish_route(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def _fhir(body: dict[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=FHIR_JSON)


def _outcome(status: int, code: str, message: str, expression: str = "") -> Response:
    return _fhir(operation_outcome(message, code=code, expression=expression), status)


def _base_url(request: Request) -> str:
    """Return the FHIR base as the client reached it (the mount point included)."""
    root = str(request.scope.get("root_path", "")).rstrip("/")
    return str(request.url.replace(path=root, query="", fragment="")).rstrip("/")


def _requester(request: Request) -> str | None:
    return request.headers.get(REQUESTER_HEADER) or None


def _who(request: Request) -> str:
    host = request.client.host if request.client else "-"
    return f"{_requester(request) or 'anonymous'}@{host}"


def _entitled(request: Request, entry: StoredEntry) -> bool:
    if not entry.manifest.masked:
        return True
    if request.headers.get(ENTITLEMENT_HEADER, "").lower() == MASKED_ENTITLEMENT:
        return True
    requester = _requester(request)
    custodian = entry.manifest.custodian
    return requester is not None and requester in {
        entry.manifest.source_box_id,
        None if custodian is None else custodian.value,
    }


def create_registry_app(
    database_url: str, *, production: bool = False, audit_path: Path | None = None
) -> FastAPI:
    """Build the registry app on its own store.

    Parameters
    ----------
    database_url
        SQLAlchemy URL of the store (``sqlite:///...`` or ``postgresql+psycopg://...``); the
        tables are created if missing.
    production
        Refuse the test and demonstration INS OIDs; restrict replace/delete to the publisher.
    audit_path
        JSON-lines audit trail; ``None`` logs audit records to the ``registry.audit`` logger.

    Returns
    -------
    FastAPI
        The app; ``app.state.registry_store`` is its store, closed by the app's lifespan (call
        ``app.state.registry_store.close()`` yourself when the app is mounted in another one).
    """
    store = RegistryStore(database_url)
    audit = RegistryAudit(audit_path)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        store.close()
        audit.close()

    app = _RegistryApp(
        title="drimbox national registry (IHE MHD)", lifespan=lifespan, openapi_url=None
    )
    app.state.registry_store = store
    app.state.registry_audit = audit

    async def guarded(
        request: Request, event: str, work: Callable[[], _T], render: Callable[[_T], Response]
    ) -> Response:
        durable = event in _WRITES

        def refused(outcome: str, **fields: str) -> Awaitable[None]:
            return run_in_threadpool(
                partial(audit.record, durable=durable, who=_who(request), **fields),
                event,
                outcome,
            )

        try:
            # A plain executor hop: anyio's to_thread (run_in_threadpool) cost ≈ 0.06 ms
            # more CPU per request (capacity limiter, cancel scope, context copy).
            result = await asyncio.get_running_loop().run_in_executor(_BLOCKING_CALLS, work)
        except BundleError as error:
            status = 400 if error.code in _CLIENT_ERRORS else 422
            await refused("refused", reason=str(error)[:200])
            return _outcome(status, error.code, str(error), error.expression)
        except _RejectionError as error:
            await refused("refused", reason=str(error)[:200])
            return _outcome(error.status, error.code, str(error), error.expression)
        except EntryNotFoundError as error:
            await refused("not-found")
            return _outcome(404, "not-found", str(error))
        except EntryConflictError as error:
            await refused("conflict", reason=str(error)[:200])
            return _outcome(409, "conflict", str(error))
        except DBAPIError:
            await refused("unavailable")
            return _outcome(503, "transient", "the registry database is unavailable; retry later")
        return render(result)

    @app.get("/metadata")
    async def metadata(request: Request) -> Response:
        return _fhir(capability_statement(_base_url(request)))

    async def provide_document_bundle(scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        response = await publish(request)
        await response(scope, receive, send)

    async def publish(request: Request) -> Response:
        declared = request.headers.get("content-length", "0")
        if not declared.isdigit() or int(declared) > MAX_BUNDLE_BYTES:
            return _outcome(413, "too-long", f"Bundle larger than {MAX_BUNDLE_BYTES} bytes")
        body = await request.body()
        media_type = request.headers.get("content-type", "").split(";")[0].strip()
        if media_type not in {FHIR_JSON, "application/json"}:
            return _outcome(415, "not-supported", f"send the Bundle as {FHIR_JSON}")
        if len(body) > MAX_BUNDLE_BYTES:
            return _outcome(413, "too-long", f"Bundle larger than {MAX_BUNDLE_BYTES} bytes")

        def work() -> tuple[Any, bool, list[str]]:
            try:
                bundle = orjson.loads(body)
            except orjson.JSONDecodeError:
                raise BundleError("the body is not JSON", code="structure") from None
            manifest, kos = read_submission(bundle)
            check_submission(manifest, kos, production=production)
            if production and manifest.replaces is not None:
                target = store.get(manifest.replaces) or _by_kos_uid(store, manifest.replaces)
                if target is not None:
                    _check_owner(request, target)
            outcome = store.publish(manifest, kos)
            order = [entry["resource"]["resourceType"] for entry in bundle["entry"]]
            audit.record(
                "ITI-65",
                "created" if outcome.created else "unchanged",
                who=_who(request),
                entry=outcome.entry.entry_id,
                kos=manifest.kos_sop_instance_uid,
                patient=patient_digest(manifest.patient_oid, manifest.patient_value),
                replaces=outcome.entry.manifest.replaces,
                durable=True,
            )
            return outcome.entry, outcome.created, order

        def render(result: tuple[Any, bool, list[str]]) -> Response:
            entry, created, order = result
            return _fhir(transaction_response(entry, created=created, order=order))

        return await guarded(request, "ITI-65", work, render)

    app.publish_route = provide_document_bundle

    @app.get("/DocumentReference")
    async def find_document_references(request: Request) -> Response:
        def work() -> tuple[list[StoredEntry], str | None]:
            query = parse_search(
                list(request.query_params.multi_items()),
                production=production,
                include_masked=request.headers.get(ENTITLEMENT_HEADER, "").lower()
                == MASKED_ENTITLEMENT,
                requester=_requester(request),
            )
            try:
                found, cursor = store.search(query)
            except ValueError as error:
                raise BundleError(str(error), code="invalid", expression="_cursor") from None
            audit.record(
                "ITI-67",
                "ok",
                who=_who(request),
                patient=None if query.patient is None else patient_digest(*query.patient),
                count=len(found),
            )
            return found, cursor

        def render(result: tuple[list[StoredEntry], str | None]) -> Response:
            found, cursor = result
            return _fhir(searchset(found, cursor, base=_base_url(request), url=request.url))

        return await guarded(request, "ITI-67", work, render)

    def visible(request: Request, entry_id: str, event: str) -> StoredEntry:
        entry = store.get(entry_id)
        if entry is None or not _entitled(request, entry):
            raise EntryNotFoundError(f"no entry {entry_id}")  # masked: do not reveal it exists
        audit.record(event, "ok", who=_who(request), entry=entry_id)
        return entry

    @app.get("/DocumentReference/{entry_id}")
    async def read_document_reference(request: Request, entry_id: str) -> Response:
        return await guarded(
            request,
            "read",
            lambda: visible(request, entry_id, "read"),
            lambda entry: _fhir(stored_document_reference(entry, _base_url(request))),
        )

    @app.delete("/DocumentReference/{entry_id}")
    async def delete_document_reference(request: Request, entry_id: str) -> Response:
        def work() -> StoredEntry:
            entry = store.get(entry_id)
            if entry is None:
                raise EntryNotFoundError(f"no entry {entry_id}")
            if production:
                _check_owner(request, entry)
            deleted = store.delete(entry_id)
            audit.record("delete", "ok", who=_who(request), entry=entry_id, durable=True)
            return deleted

        return await guarded(
            request,
            "delete",
            work,
            lambda entry: _fhir(stored_document_reference(entry, _base_url(request))),
        )

    @app.get("/Binary/{entry_id}")
    async def retrieve_document(request: Request, entry_id: str) -> Response:
        def work() -> bytes:
            visible(request, entry_id, "ITI-68")
            content = store.content(entry_id)
            if content is None:
                raise EntryNotFoundError(f"no document {entry_id}")
            return content

        def render(content: bytes) -> Response:
            if FHIR_JSON in request.headers.get("accept", ""):
                return _fhir(binary_resource(entry_id, content))
            return Response(content, media_type=_DICOM)

        return await guarded(request, "ITI-68", work, render)

    return app


def _by_kos_uid(store: RegistryStore, kos_uid: str) -> StoredEntry | None:
    found, _ = store.search(EntryQuery(kos_sop_instance_uid=kos_uid, include_masked=True, count=1))
    return found[0] if found else None


def _check_owner(request: Request, entry: StoredEntry) -> None:
    requester = _requester(request)
    custodian = entry.manifest.custodian
    owners = {entry.manifest.source_box_id, None if custodian is None else custodian.value}
    if requester is None or requester not in owners:
        raise _RejectionError(
            403,
            "forbidden",
            f"only the publishing box or the custodian may change this entry ({REQUESTER_HEADER})",
        )
