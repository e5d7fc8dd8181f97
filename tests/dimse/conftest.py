"""Fixtures for DIMSE tests: pynetdicom configured as the box configures it, box nodes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import _config

from drimbox.audit import MemoryAuditLog
from drimbox.config import Peer
from drimbox.dimse import configure_pynetdicom
from drimbox.dimse.scp import DimseServer
from drimbox.index import open_index
from drimbox.ports import BlobStore
from drimbox.services.ingest import IngestService
from drimbox.storage import FilesystemBlobStore
from tests.dimse._support import BOX_AET, BoxNode

_CONFIG_NAMES = ("STORE_SEND_CHUNKED_DATASET", "LOG_HANDLER_LEVEL")


@pytest.fixture(autouse=True)
def _pynetdicom_configured() -> Iterator[None]:
    """Configure pynetdicom as the composition root does; restore its globals afterwards."""
    saved = {name: getattr(_config, name) for name in _CONFIG_NAMES}
    configure_pynetdicom()
    yield
    for name, value in saved.items():
        setattr(_config, name, value)


BoxNodeFactory = Callable[..., BoxNode]


@pytest.fixture
def box_node_factory(tmp_path: Path) -> Iterator[BoxNodeFactory]:
    """Start DIMSE servers over a FilesystemBlobStore and a SqliteIndex under ``tmp_path``.

    Keyword arguments: ``peers``, ``max_instance_bytes``, ``blobs`` (another blob store),
    ``loopback_only``.
    """
    nodes: list[BoxNode] = []

    def make(
        *,
        peers: tuple[Peer, ...] = (),
        max_instance_bytes: int = 64 << 20,
        blobs: BlobStore | None = None,
        loopback_only: bool = True,
        **_: Any,
    ) -> BoxNode:
        directory = tmp_path / f"node{len(nodes)}"
        directory.mkdir()
        store = blobs if blobs is not None else FilesystemBlobStore(directory / "blobs")
        index = open_index(f"sqlite:///{directory / 'index.sqlite3'}")
        audit = MemoryAuditLog()
        ingest = IngestService(store, index, audit, max_instance_bytes=max_instance_bytes)
        server = DimseServer(
            ae_title=BOX_AET,
            host="127.0.0.1",
            port=0,
            peers=peers,
            loopback_only=loopback_only,
            ingest=ingest,
            audit=audit,
        )
        node = BoxNode(
            server=server, port=server.start(), ingest=ingest, blobs=store, index=index, audit=audit
        )
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.server.stop()
        node.index.close()


@pytest.fixture
def box_node(box_node_factory: BoxNodeFactory) -> BoxNode:
    """One box node with the loopback-only default policy."""
    return box_node_factory()
