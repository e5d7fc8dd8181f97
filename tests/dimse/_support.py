"""Helpers for DIMSE tests: a box node (DIMSE server + ingest + real adapters), dcmtk runners."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset
from pynetdicom import AE

from drimbox.audit import MemoryAuditLog
from drimbox.dicom.part10 import read_file_meta
from drimbox.dimse.scp import DimseServer
from drimbox.ports import BlobStore, Index
from drimbox.services.ingest import IngestService

__all__ = [
    "ECHOSCU",
    "STORESCU",
    "BoxNode",
    "data_set_bytes",
    "dcmtk_env",
    "pynetdicom_store",
    "status_of",
    "stored_data_set_bytes",
    "storescu",
]

ECHOSCU = "/usr/bin/echoscu"
STORESCU = "/usr/bin/storescu"
BOX_AET = "DRIMBOX"


def dcmtk_env() -> dict[str, str]:
    """The environment for dcmtk tools: Nagle off (RECIPES.md, TCP_NODELAY)."""
    return {**os.environ, "TCP_NODELAY": "1"}


def storescu(
    port: int, files: list[Path], *extra: str, calling: str = "STORESCU", called: str = BOX_AET
) -> subprocess.CompletedProcess[str]:
    """Run dcmtk ``storescu`` against 127.0.0.1:``port`` (verbose, so statuses are logged)."""
    return subprocess.run(
        [STORESCU, "-v", "-aet", calling, "-aec", called, *extra, "127.0.0.1", str(port)]
        + [str(f) for f in files],
        env=dcmtk_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@dataclass
class BoxNode:
    """A DIMSE server wired to an ingest service over real adapters."""

    server: DimseServer
    port: int
    ingest: IngestService
    blobs: BlobStore
    index: Index
    audit: MemoryAuditLog


def data_set_bytes(part10: Path) -> bytes:
    """Return the encoded data set of a Part 10 file (what a C-STORE carries)."""
    with part10.open("rb") as stream:
        _, offset = read_file_meta(stream)
    return part10.read_bytes()[offset:]


def stored_data_set_bytes(blobs: BlobStore, key: str) -> bytes:
    """Return the data set part of a stored Part 10 blob."""
    import io

    content = b"".join(blobs.stream(key))
    _, offset = read_file_meta(io.BytesIO(content))
    return content[offset:]


def status_of(response: Dataset) -> int:
    """Return the Status of a C-STORE response (``-1`` when none came back)."""
    return int(response.Status) if "Status" in response else -1


def pynetdicom_store(port: int, files: list[Path], *, calling: str = "PYNETDICOM") -> list[Dataset]:
    """Send Part 10 files with pynetdicom, their data sets raw (no decoding or conversion).

    Returns the C-STORE response of each file, in order.
    """
    from pydicom import dcmread
    from pynetdicom import _config

    _config.STORE_SEND_CHUNKED_DATASET = True  # restored by the autouse fixture
    ae = AE(ae_title=calling)
    contexts = set()
    for path in files:
        meta = dcmread(path, stop_before_pixels=True).file_meta
        contexts.add((str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID)))
    for sop_class, syntax in sorted(contexts):
        ae.add_requested_context(sop_class, [syntax])
    association = ae.associate("127.0.0.1", port, ae_title=BOX_AET)
    assert association.is_established, "association rejected or failed"
    try:
        return [association.send_c_store(path) for path in files]
    finally:
        association.release()
