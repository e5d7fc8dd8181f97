"""The composition root.

The only module that chooses adapters, builds services, sets library globals (pydicom,
pynetdicom) and wires the DIMSE, HL7, HTTP listeners and the background workers together.
Nothing is built at import time: :func:`build_box` turns a :class:`~drimbox.config.Settings`
into a :class:`Box`, so several differently configured boxes can run in one process (tests do).
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import multiprocessing.process
import multiprocessing.synchronize
import os
import signal
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from dicomweb import create_dicomweb_router
from drimbox.affinity import dimse_cpu, set_dimse_cpu
from drimbox.audit import FileAuditLog
from drimbox.config import Settings, resolved_dimse_processes
from drimbox.dimse import configure_pynetdicom
from drimbox.dimse.pacs import DimsePacs
from drimbox.dimse.scp import DimseServer, bind_listener
from drimbox.fsync import fsync_directory
from drimbox.hl7.inbox import HL7Inbox, make_report_handler
from drimbox.hl7.mllp import MllpServer
from drimbox.hl7.reports import ReportWorker
from drimbox.index import open_index
from drimbox.index.publications import SqlPublicationStore, open_publication_store
from drimbox.ports import AuditLog, BlobStore, Index, Pacs
from drimbox.services.ingest import IngestService
from drimbox.services.iocm import RejectionHandler
from drimbox.services.manifest_builder import KosManifestBuilder
from drimbox.services.publication import PublicationService
from drimbox.services.publisher import Publisher
from drimbox.services.query import QueryService
from drimbox.services.reconcile import check_newest_instances
from drimbox.services.retrieve import RetrieveService
from drimbox.services.stability import StabilityMonitor
from drimbox.services.worker import PollingWorker
from drimbox.storage.filesystem import FilesystemBlobStore
from drimbox.web.health import create_health_router
from registry.client import RegistryClient
from registry.service import create_registry_app

__all__ = ["Box", "build_adapters", "build_blob_store", "build_box", "run_dimse_receiver"]

_log = logging.getLogger("drimbox.bootstrap")
_HTTP_STARTUP_TIMEOUT = 15.0
_RECEIVER_STARTUP_TIMEOUT = 60.0
_MAX_QIDO_RESULTS = 1000
_MAINTENANCE_INTERVAL = 30.0
_UID_ROOT_FILE = "organization-uid-root"


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


def organization_uid_root(settings: Settings) -> str:
    """The configured UID root, or one generated once (``2.25`` + a UUID) and kept on disk."""
    if settings.organization_uid_root:
        return settings.organization_uid_root
    path = settings.data_dir / _UID_ROOT_FILE
    if path.exists():
        return path.read_text(encoding="ascii").strip()
    root = f"2.25.{uuid.uuid4().int}"[:40].rstrip(".")
    path.write_text(root + "\n", encoding="ascii")
    return root


@dataclass
class Box:
    """A wired box: adapters, services, listeners and workers.

    Attributes
    ----------
    settings
        The settings it was built from, with the bound ports.
    blobs, index, audit, publications
        Adapters.
    ingest, query, retrieve, stability, publication, publisher
        Services.
    app
        The HTTP application (DICOMweb at ``/dicom-web``, registry at ``/registry``).
    """

    settings: Settings
    blobs: BlobStore
    index: Index
    audit: AuditLog
    publications: SqlPublicationStore
    ingest: IngestService
    query: QueryService
    retrieve: RetrieveService
    stability: StabilityMonitor
    publication: PublicationService
    publisher: Publisher
    registry: RegistryClient
    app: FastAPI
    dimse: DimseServer | None
    mllp: MllpServer
    hl7_worker: ReportWorker
    http_listener: socket.socket
    dimse_listener: socket.socket | None = None
    started: threading.Event = field(default_factory=threading.Event)
    """Set once every listener and worker runs (``/health/ready`` answers 200 from then)."""
    _http_server: uvicorn.Server | None = None
    _http_thread: threading.Thread | None = None
    _receivers: list[multiprocessing.process.BaseProcess] = field(default_factory=list)
    _maintenance: list[PollingWorker] = field(default_factory=list)

    @property
    def dimse_port(self) -> int:
        """The bound DIMSE port."""
        return self.settings.dimse_port

    @property
    def http_port(self) -> int:
        """The bound HTTP port."""
        return self.settings.http_port

    @property
    def hl7_port(self) -> int:
        """The bound HL7 MLLP port."""
        return self.settings.hl7_port

    def start(self) -> None:
        """Start the listeners and workers; return once every listener accepts connections.

        After an unclean stop (no clean-stop marker in the data directory), the newest index
        rows are checked first (:func:`drimbox.services.reconcile.check_newest_instances`).
        """
        self._check_last_stop()
        self._start_http()
        if self.dimse is not None:
            self.dimse.start()
            self._start_receivers()
        self.mllp.start()
        self.stability.start()
        self.publisher.start()
        self.hl7_worker.start()
        self._maintenance = [
            PollingWorker(
                "drimbox-expiry", self.publication.expire_waiting, interval=_MAINTENANCE_INTERVAL
            )
        ]
        for task in self._maintenance:
            task.start()
        self.started.set()
        self.audit.record(
            "box.start", "success", aet=self.settings.aet, dimse_port=self.dimse_port,
            http_port=self.http_port, hl7_port=self.hl7_port,
        )  # fmt: skip

    def stop(self) -> None:
        """Stop listeners and workers, then release the adapters. Idempotent."""
        was_running = self.started.is_set()
        self.started.clear()
        for task in self._maintenance:
            task.stop()
        self._maintenance.clear()
        self.hl7_worker.stop()
        self.mllp.stop()
        self.publisher.stop()
        self.stability.stop()
        for process in self._receivers:
            process.terminate()
        quiesced = True  # nothing is being stored any more: the clean-stop marker may be set
        for process in self._receivers:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                quiesced = False
        self._receivers.clear()
        if self.dimse is not None and not self.dimse.stop():
            quiesced = False
        if self._http_server is not None and self._http_thread is not None:
            self._http_server.should_exit = True
            self._http_thread.join(timeout=10)
            quiesced = quiesced and not self._http_thread.is_alive()
            self._http_server = None
        self.http_listener.close()
        if was_running and quiesced:
            _write_clean_stop_marker(self.settings.data_dir)
        self.registry.close()
        self.publications.close()
        self.index.close()
        self.blobs.close()
        _close_audit(self.audit)

    def _check_last_stop(self) -> None:
        marker = self.settings.data_dir / CLEAN_STOP_MARKER
        if marker.exists():
            marker.unlink()
            fsync_directory(self.settings.data_dir)  # a crash from now on is seen as one
            return
        removed = check_newest_instances(self.blobs, self.index, self.audit)
        _log.info("box.unclean_stop_checked removed=%d", len(removed))

    def _start_http(self) -> None:
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            lifespan="off",
            access_log=False,
            timeout_graceful_shutdown=5,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run,
            kwargs={"sockets": [self.http_listener]},
            name="drimbox-http",
            daemon=True,
        )
        thread.start()
        if not _wait(lambda: server.started, _HTTP_STARTUP_TIMEOUT):
            raise RuntimeError(f"the HTTP server did not start on port {self.http_port}")
        self._http_server, self._http_thread = server, thread

    def _start_receivers(self) -> None:
        """Start the extra DIMSE receiver processes; return once each one accepts associations."""
        extra = self.settings.dimse_processes - 1
        if extra <= 0:
            return
        context = multiprocessing.get_context("spawn")
        for number in range(extra):
            ready = context.Event()
            process = context.Process(
                target=run_dimse_receiver,
                args=(self.settings, self.dimse_listener, ready, number + 1),
                name=f"drimbox-dimse-{number + 1}",
                daemon=True,
            )
            process.start()
            self._receivers.append(process)
            if not ready.wait(_RECEIVER_STARTUP_TIMEOUT):
                raise RuntimeError(
                    f"DIMSE receiver process {number + 1} did not start within "
                    f"{_RECEIVER_STARTUP_TIMEOUT:.0f} s (exit code {process.exitcode})"
                )


CLEAN_STOP_MARKER = ".clean-stop"
"""File the box writes in its data directory when it stops with nothing in flight."""


def _write_clean_stop_marker(data_dir: Path) -> None:
    marker = data_dir / CLEAN_STOP_MARKER
    fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_directory(data_dir)


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    event = threading.Event()
    waited = 0.0
    while waited < timeout:
        if predicate():
            return True
        event.wait(0.02)
        waited += 0.02
    return predicate()


def _bind_http(settings: Settings) -> socket.socket:
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted connections only when the
    # socket's protocol says TCP (a proto-0 listener leaves Nagle on: 40 ms stalls per answer).
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    listener.bind((settings.host, settings.http_port))
    listener.listen(1024)
    return listener


def _bind_port(settings: Settings, port: int) -> int:
    """Resolve port 0 to a free port now, so URLs built from it are final."""
    if port != 0:
        return port
    with socket.socket() as probe:
        probe.bind((settings.host, 0))
        return int(probe.getsockname()[1])


def build_box(settings: Settings, *, dimse: bool = True) -> Box:
    """Build a box from validated settings; its HTTP socket is bound, nothing is served yet.

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
    http_listener = _bind_http(settings)
    settings = dataclasses.replace(
        settings,
        dimse_processes=resolved_dimse_processes(settings),
        http_port=int(http_listener.getsockname()[1]),
        dimse_port=_bind_port(settings, settings.dimse_port),
        hl7_port=_bind_port(settings, settings.hl7_port),
    )
    if dimse:
        _use_dimse_cpu(settings, 0)
    blobs, index, audit = build_adapters(settings)
    publications = open_publication_store(settings.resolved_index_url)
    ingest = IngestService(blobs, index, audit, max_instance_bytes=settings.max_instance_bytes)
    query = QueryService(index, max_results=_MAX_QIDO_RESULTS)
    retrieve = RetrieveService(blobs, index, audit)
    stability = StabilityMonitor(index, quiet_seconds=settings.stability_seconds)
    registry_url = settings.registry_url or f"http://127.0.0.1:{settings.http_port}/registry"
    source_box_id = settings.source_box_id or settings.aet
    registry = RegistryClient(registry_url, requester=source_box_id)
    publisher = Publisher(
        publications,
        blobs,
        registry,
        audit,
        base_delay=settings.publish_base_delay,
        max_delay=settings.publish_max_delay,
    )
    publication = PublicationService(
        index=index,
        blobs=blobs,
        store=publications,
        audit=audit,
        build_manifest=KosManifestBuilder(
            public_base_url=settings.resolved_public_url,
            organization_uid_root=organization_uid_root(settings),
            institution_name=settings.institution_name,
        ),
        source_box_id=source_box_id,
        wake_publisher=publisher.wake,
        pacs=_pacs(settings),
        production=settings.production,
        images_timeout=timedelta(seconds=settings.images_timeout_seconds),
    )
    stability.subscribe(publication.on_study_stable)
    ingest.subscribe(RejectionHandler(index, blobs, audit, publication.on_instances_rejected))
    inbox = HL7Inbox(settings.data_dir / "hl7-inbox")
    hl7_worker = ReportWorker(
        inbox, publication.handle_report, audit, allow_test_oids=not settings.production
    )
    mllp = MllpServer(
        settings.host, settings.hl7_port, make_report_handler(inbox, on_stored=hl7_worker.wake)
    )
    started = threading.Event()
    app = _build_app(
        settings, query=query, retrieve=retrieve, ingest=ingest, index=index, started=started
    )
    dimse_listener = (
        bind_listener(settings.host, settings.dimse_port)
        if dimse and settings.dimse_processes > 1
        else None
    )
    server = (
        DimseServer(
            ae_title=settings.aet,
            host=settings.host,
            port=settings.dimse_port,
            peers=settings.peers,
            loopback_only=settings.loopback_only,
            ingest=ingest,
            audit=audit,
            listener=dimse_listener,
        )
        if dimse
        else None
    )
    return Box(
        settings=settings,
        blobs=blobs,
        index=index,
        audit=audit,
        publications=publications,
        ingest=ingest,
        query=query,
        retrieve=retrieve,
        stability=stability,
        publication=publication,
        publisher=publisher,
        registry=registry,
        app=app,
        dimse=server,
        mllp=mllp,
        hl7_worker=hl7_worker,
        http_listener=http_listener,
        dimse_listener=dimse_listener,
        started=started,
    )


def _pacs(settings: Settings) -> Pacs | None:
    if not settings.pacs_aet:
        return None
    peer = next(peer for peer in settings.peers if peer.aet == settings.pacs_aet)
    return DimsePacs(calling_aet=settings.aet, peer=peer)


def _build_app(
    settings: Settings,
    *,
    query: QueryService,
    retrieve: RetrieveService,
    ingest: IngestService,
    index: Index,
    started: threading.Event,
) -> FastAPI:
    app = FastAPI(
        title="drimbox",
        summary="DRIMbox imaging gateway: DICOMweb (PS3.18) and the embedded national registry",
        docs_url="/docs",
    )
    app.include_router(create_health_router(index, started), prefix="")
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


def run_dimse_receiver(
    settings: Settings,
    listener: socket.socket,
    ready: multiprocessing.synchronize.Event,
    process_number: int = 1,
) -> None:
    """Entry point of an extra DIMSE receiver process sharing the listening socket.

    It builds its own adapters (each process has its own database connections) and serves
    C-ECHO/C-STORE until SIGTERM, or until the main process is gone (it would otherwise keep
    the port and accept associations for a box that no longer runs). Instances it stores
    reach the main process's workers through the shared index (stability is polled there).
    ``process_number`` (1 for the first extra process) chooses its CPU (drimbox.affinity).
    """
    configure_pynetdicom()
    _use_dimse_cpu(settings, process_number)
    blobs, index, audit = build_adapters(settings)
    ingest = IngestService(blobs, index, audit, max_instance_bytes=settings.max_instance_bytes)
    ingest.subscribe(RejectionHandler(index, blobs, audit))  # IOCM notes may arrive here too
    server = DimseServer(
        ae_title=settings.aet,
        host=settings.host,
        port=settings.dimse_port,
        peers=settings.peers,
        loopback_only=settings.loopback_only,
        ingest=ingest,
        audit=audit,
        listener=listener,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    server.start()
    ready.set()
    parent = os.getppid()
    try:
        while not stop.wait(0.5):  # timed: see drimbox.cli.serve
            if os.getppid() != parent:  # the main process died (kill -9): do not outlive it
                _log.warning("dimse.receiver_orphaned pid=%d: stopping", os.getpid())
                break
    finally:
        server.stop()
        index.close()
        blobs.close()
        _close_audit(audit)


def _use_dimse_cpu(settings: Settings, process_number: int) -> None:
    """Give this DIMSE process its CPU, or none (``dimse_cpu_affinity``; drimbox.affinity)."""
    cpu = dimse_cpu(process_number) if settings.dimse_cpu_affinity else None
    set_dimse_cpu(cpu)
    if cpu is not None:
        _log.info("dimse.cpu process=%d cpu=%d", process_number, cpu)


def _close_audit(audit: AuditLog) -> None:
    """Sync the audit trail's last records (see :mod:`drimbox.audit`: group commit)."""
    if isinstance(audit, FileAuditLog):
        audit.close()
