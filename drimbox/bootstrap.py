"""The composition root.

The only module that chooses adapters, builds services, sets library globals (pydicom,
pynetdicom) and wires the DIMSE, HTTP and background workers together. Nothing is built at import
time: :func:`build_box` turns a :class:`~drimbox.config.Settings` into a :class:`Box`, so several
differently configured boxes can run in one process (tests do).
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import multiprocessing.process
import signal
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from dicomweb import create_dicomweb_router
from drimbox.audit import FileAuditLog
from drimbox.config import Settings
from drimbox.dimse import configure_pynetdicom
from drimbox.dimse.scp import DimseServer
from drimbox.index import open_index
from drimbox.ports import AuditLog, BlobStore, Index
from drimbox.services.ingest import IngestService
from drimbox.services.query import QueryService
from drimbox.services.retrieve import RetrieveService
from drimbox.services.stability import StabilityMonitor
from drimbox.storage.filesystem import FilesystemBlobStore
from drimbox.web.health import create_health_router
from registry.service import create_registry_app

__all__ = ["Box", "build_adapters", "build_box"]

_log = logging.getLogger("drimbox.bootstrap")
_HTTP_STARTUP_TIMEOUT = 15.0
_MAX_QIDO_RESULTS = 1000


def build_blob_store(settings: Settings) -> BlobStore:
    """Return the blob store the settings choose."""
    if settings.storage_backend == "s3":
        from drimbox.storage.s3 import S3BlobStore  # minio is imported only when S3 is used

        return S3BlobStore(
            endpoint=settings.s3_endpoint,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key,
            bucket=settings.s3_bucket,
            secure=settings.s3_secure,
            region=settings.s3_region,
        )
    return FilesystemBlobStore(settings.data_dir / "blobs")


def build_adapters(settings: Settings) -> tuple[BlobStore, Index, AuditLog]:
    """Open the blob store, the index (running migrations) and the audit trail."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    blobs = build_blob_store(settings)
    index = open_index(settings.resolved_index_url)
    audit = FileAuditLog(settings.data_dir / "audit" / "audit.jsonl")
    return blobs, index, audit


@dataclass
class Box:
    """A wired box: adapters, services and listeners.

    Attributes
    ----------
    settings
        The settings it was built from (ports updated once bound).
    blobs, index, audit
        Adapters.
    ingest, query, retrieve, stability
        Services.
    app
        The HTTP application (DICOMweb at ``/dicom-web``, registry at ``/registry``).
    """

    settings: Settings
    blobs: BlobStore
    index: Index
    audit: AuditLog
    ingest: IngestService
    query: QueryService
    retrieve: RetrieveService
    stability: StabilityMonitor
    app: FastAPI
    dimse: DimseServer | None = None
    dimse_port: int = 0
    http_port: int = 0
    _http_server: uvicorn.Server | None = None
    _http_thread: threading.Thread | None = None
    _receivers: list[multiprocessing.process.BaseProcess] = field(default_factory=list)

    def start(self) -> None:
        """Start the listeners and workers; return once every listener accepts connections."""
        if self.dimse is not None:
            self.dimse_port = self.dimse.start()
            self._start_receivers()
        self.http_port = self._start_http()
        self.settings = dataclasses.replace(
            self.settings, dimse_port=self.dimse_port, http_port=self.http_port
        )
        self.stability.start()
        self.audit.record(
            "box.start",
            "success",
            aet=self.settings.aet,
            dimse_port=self.dimse_port,
            http_port=self.http_port,
        )

    def stop(self) -> None:
        """Stop listeners and workers, then release the adapters. Idempotent."""
        self.stability.stop()
        for process in self._receivers:
            process.terminate()
        for process in self._receivers:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
        self._receivers.clear()
        if self.dimse is not None:
            self.dimse.stop()
        if self._http_server is not None and self._http_thread is not None:
            self._http_server.should_exit = True
            self._http_thread.join(timeout=10)
            self._http_server = None
        self.index.close()
        self.blobs.close()

    def _start_http(self) -> int:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.settings.host, self.settings.http_port))
        listener.set_inheritable(True)
        port = int(listener.getsockname()[1])
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            lifespan="off",
            access_log=False,
            timeout_graceful_shutdown=5,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [listener]}, name="drimbox-http", daemon=True
        )
        thread.start()
        if not _wait(lambda: server.started, _HTTP_STARTUP_TIMEOUT):
            raise RuntimeError(f"the HTTP server did not start on port {port}")
        self._http_server, self._http_thread = server, thread
        return port

    def _start_receivers(self) -> None:
        extra = self.settings.dimse_processes - 1
        if extra <= 0:
            return
        child_settings = dataclasses.replace(self.settings, dimse_port=self.dimse_port)
        context = multiprocessing.get_context("spawn")
        for number in range(extra):
            process = context.Process(
                target=run_dimse_receiver,
                args=(child_settings,),
                name=f"drimbox-dimse-{number + 1}",
                daemon=True,
            )
            process.start()
            self._receivers.append(process)


def _wait(predicate: Any, timeout: float) -> bool:
    event = threading.Event()
    waited = 0.0
    while waited < timeout:
        if predicate():
            return True
        event.wait(0.02)
        waited += 0.02
    return bool(predicate())


def build_box(settings: Settings, *, dimse: bool = True) -> Box:
    """Build a box from validated settings (nothing is started).

    Parameters
    ----------
    settings
        Validated settings (:func:`drimbox.config.load_settings`).
    dimse
        Whether to build the DIMSE listener.

    Returns
    -------
    Box
    """
    configure_pynetdicom()
    blobs, index, audit = build_adapters(settings)
    ingest = IngestService(blobs, index, audit, max_instance_bytes=settings.max_instance_bytes)
    query = QueryService(index, max_results=_MAX_QIDO_RESULTS)
    retrieve = RetrieveService(blobs, index, audit)
    stability = StabilityMonitor(index, quiet_seconds=settings.stability_seconds)
    app = _build_app(settings, query=query, retrieve=retrieve, ingest=ingest, index=index)
    server = (
        DimseServer(
            ae_title=settings.aet,
            host=settings.host,
            port=settings.dimse_port,
            peers=settings.peers,
            loopback_only=settings.loopback_only,
            ingest=ingest,
            audit=audit,
            reuse_port=settings.dimse_processes > 1,
        )
        if dimse
        else None
    )
    return Box(
        settings=settings,
        blobs=blobs,
        index=index,
        audit=audit,
        ingest=ingest,
        query=query,
        retrieve=retrieve,
        stability=stability,
        app=app,
        dimse=server,
    )


def _build_app(
    settings: Settings,
    *,
    query: QueryService,
    retrieve: RetrieveService,
    ingest: IngestService,
    index: Index,
) -> FastAPI:
    app = FastAPI(
        title="drimbox",
        summary="DRIMbox imaging gateway: DICOMweb (PS3.18) and the embedded national registry",
        docs_url="/docs",
    )
    app.include_router(create_health_router(index), prefix="")
    app.include_router(
        create_dicomweb_router(
            query=query,
            retrieve=retrieve,
            ingest=ingest,
            max_results=_MAX_QIDO_RESULTS,
            max_request_bytes=settings.max_instance_bytes,
        ),
        prefix="/dicom-web",
    )
    if settings.registry_url is None:
        registry_dir = settings.data_dir / "registry"
        registry_dir.mkdir(parents=True, exist_ok=True)
        app.mount(
            "/registry",
            create_registry_app(
                f"sqlite:///{(registry_dir / 'registry.sqlite3').resolve()}",
                production=settings.production,
                audit_path=registry_dir / "audit.jsonl",
            ),
        )
    return app


def run_dimse_receiver(settings: Settings) -> None:
    """Entry point of an extra DIMSE receiver process sharing the listening port.

    It builds its own adapters (each process has its own database connections) and serves
    C-ECHO/C-STORE until SIGTERM.
    """
    configure_pynetdicom()
    blobs, index, audit = build_adapters(settings)
    ingest = IngestService(blobs, index, audit, max_instance_bytes=settings.max_instance_bytes)
    server = DimseServer(
        ae_title=settings.aet,
        host=settings.host,
        port=settings.dimse_port,
        peers=settings.peers,
        loopback_only=settings.loopback_only,
        ingest=ingest,
        audit=audit,
        reuse_port=True,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    server.start()
    try:
        stop.wait()
    finally:
        server.stop()
        index.close()
        blobs.close()


def data_dir_lock_path(settings: Settings) -> Path:
    """Where ``drimbox serve`` takes its single-instance lock."""
    return settings.data_dir / "serve.lock"
