"""Fixtures: a DICOMweb app built in-process on real adapters (filesystem blobs + SQLite index).

``dicomweb_box`` builds the FastAPI app (the router under ``/dicom-web``), serves it with uvicorn
on 127.0.0.1 (free port, in a thread; Starlette's TestClient is deprecated with httpx), and
gives an httpx client on it, the services, and ``load()`` to store synthetic studies through the
ingest service.
"""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from pydicom.dataset import Dataset

from dicomweb import create_dicomweb_router
from dicomweb.multipart import (
    MultipartParser,
    PartData,
    PartEnd,
    PartStart,
    parse_content_type,
    write_multipart,
)
from drimbox.audit import MemoryAuditLog
from drimbox.dicom.synthetic import SyntheticStudy, make_study
from drimbox.index.sqlite import SqliteIndex
from drimbox.services.ingest import IngestService
from drimbox.services.query import QueryService
from drimbox.services.retrieve import RetrieveService
from drimbox.storage.filesystem import FilesystemBlobStore

__all__ = [
    "DicomwebBox",
    "multipart_body",
    "multipart_parts",
    "part10_bytes",
    "stow_headers",
]

PREFIX = "/dicom-web"
MAX_RESULTS = 50
MAX_REQUEST_BYTES = 64 * 1024**2


def part10_bytes(dataset: Dataset) -> bytes:
    """Encode a synthetic data set as a Part 10 file."""
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@dataclass
class DicomwebBox:
    """An in-process DICOMweb app over real adapters."""

    app: FastAPI
    ingest: IngestService
    query: QueryService
    retrieve: RetrieveService
    audit: MemoryAuditLog
    index: SqliteIndex
    blobs: FilesystemBlobStore
    url: str = ""
    client: httpx.Client | None = None

    @property
    def http(self) -> httpx.Client:
        """An httpx client whose base URL is the DICOMweb root (``.../dicom-web``)."""
        assert self.client is not None, "the app is not served"
        return self.client

    def load(self, study: SyntheticStudy) -> list[Dataset]:
        """Store every instance of ``study`` through the ingest path; return the data sets."""
        datasets = list(make_study(study))
        for dataset in datasets:
            self.ingest.store_part10(io.BytesIO(part10_bytes(dataset)), source="test")
        return datasets


def build_app(
    root: Path, *, max_results: int = MAX_RESULTS, max_request_bytes: int = MAX_REQUEST_BYTES
) -> DicomwebBox:
    """Build the app (FastAPI + the DICOMweb router under ``/dicom-web``) under ``root``."""
    blobs = FilesystemBlobStore(root / "blobs")
    index = SqliteIndex(root / "index.sqlite3")
    audit = MemoryAuditLog()
    ingest = IngestService(blobs, index, audit, max_instance_bytes=max_request_bytes)
    query = QueryService(index, max_results=max_results)
    retrieve = RetrieveService(blobs, index, audit)
    app = FastAPI(title="dicomweb test")
    app.include_router(
        create_dicomweb_router(
            query=query,
            retrieve=retrieve,
            ingest=ingest,
            max_results=max_results,
            max_request_bytes=max_request_bytes,
        ),
        prefix=PREFIX,
    )
    return DicomwebBox(app, ingest, query, retrieve, audit, index, blobs)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class served:  # noqa: N801  (used as a context manager, like a function)
    """Serve ``box.app`` with uvicorn on 127.0.0.1 while the ``with`` block runs."""

    def __init__(self, box: DicomwebBox) -> None:
        self._box = box
        port = _free_port()
        config = uvicorn.Config(
            box.app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        box.url = f"http://127.0.0.1:{port}{PREFIX}"

    def __enter__(self) -> DicomwebBox:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        self._box.client = httpx.Client(base_url=self._box.url, timeout=60)
        return self._box

    def __exit__(self, *exc_info: object) -> None:
        if self._box.client is not None:
            self._box.client.close()
        self._server.should_exit = True
        self._thread.join(timeout=10)


@pytest.fixture
def dicomweb_box(tmp_path: Path) -> Iterator[DicomwebBox]:
    """A DICOMweb app on a fresh filesystem store and SQLite index, served on loopback."""
    box = build_app(tmp_path)
    with served(box):
        yield box
    box.index.close()
    box.blobs.close()


@pytest.fixture(scope="module")
def module_box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DicomwebBox]:
    """Like ``dicomweb_box``, shared by a module's read-only tests (load once, query often)."""
    box = build_app(tmp_path_factory.mktemp("dicomweb"))
    with served(box):
        yield box
    box.index.close()
    box.blobs.close()


def wait_http(url: str) -> None:
    """Wait until ``url`` answers (any status)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} does not answer")


def multipart_parts(response: httpx.Response) -> list[tuple[dict[str, str], bytes]]:
    """Split a ``multipart/related`` response into ``(part headers, body)`` pairs."""
    media_type, parameters = parse_content_type(response.headers["content-type"])
    assert media_type == "multipart/related", response.headers["content-type"]
    parser = MultipartParser(parameters["boundary"])
    parts: list[tuple[dict[str, str], bytes]] = []
    headers: dict[str, str] = {}
    data = bytearray()
    for event in parser.feed(response.content):
        if isinstance(event, PartStart):
            headers, data = dict(event.headers), bytearray()
        elif isinstance(event, PartData):
            data += event.data
        elif isinstance(event, PartEnd):
            parts.append((headers, bytes(data)))
    parser.close()
    return parts


def multipart_body(payloads: list[bytes], boundary: str = "stow-boundary") -> bytes:
    """Encode ``payloads`` as a STOW-RS request body."""
    parts = [({"Content-Type": "application/dicom"}, [payload]) for payload in payloads]
    return b"".join(write_multipart(parts, boundary))


def stow_headers(boundary: str = "stow-boundary") -> dict[str, str]:
    """Request headers of a STOW-RS request built by :func:`multipart_body`."""
    return {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json",
    }
