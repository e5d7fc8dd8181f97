"""Storage failures during C-STORE: failure statuses, never success, the server stays up and
ingest resumes once storage is back (a full tmpfs; a stopped SeaweedFS S3 server)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread

from drimbox.dicom.synthetic import SyntheticStudy, write_study
from drimbox.dimse.status import StorageStatus
from drimbox.storage import FilesystemBlobStore
from drimbox.storage.s3 import S3BlobStore
from tests.dimse._support import (
    BoxNode,
    data_set_bytes,
    pynetdicom_store,
    status_of,
    stored_data_set_bytes,
)
from tests.dimse.conftest import BoxNodeFactory
from tests.fixtures.seaweedfs import SeaweedFS

pytestmark = pytest.mark.integration

TMPFS_SIZE = "1m"
LARGER_TMPFS_SIZE = "16m"


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (we run as root), unmounted afterwards."""
    mountpoint = tmp_path / "small"
    mountpoint.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0700", "tmpfs", str(mountpoint)],
        check=True,
        capture_output=True,
    )
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=True, capture_output=True)


def _uid(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def _assert_held_exactly(node: BoxNode, stored: list[Path]) -> None:
    assert node.index.statistics().instances == len(stored)
    assert sorted(node.blobs.keys()) == sorted(node.index.blob_keys())
    for path in stored:
        location = node.index.get_instance(_uid(path))
        assert location is not None
        assert stored_data_set_bytes(node.blobs, location.blob.key) == data_set_bytes(path)


def test_full_disk_answers_out_of_resources_and_ingest_resumes_after_space_is_freed(
    box_node_factory: BoxNodeFactory, small_filesystem: Path, tmp_path: Path
) -> None:
    node = box_node_factory(blobs=FilesystemBlobStore(small_filesystem / "blobs"))
    study = SyntheticStudy(seed="full-disk", instances_per_series=16, rows=256, columns=256)
    files = write_study(study, tmp_path / "study")  # 16 x 128 KiB: twice the tmpfs

    statuses = [status_of(r) for r in pynetdicom_store(node.port, files)]

    assert set(statuses) == {StorageStatus.SUCCESS, StorageStatus.OUT_OF_RESOURCES}
    stored = [path for path, status in zip(files, statuses, strict=True) if status == 0]
    failed = [path for path, status in zip(files, statuses, strict=True) if status != 0]
    _assert_held_exactly(node, stored)
    refusals = [e for e in node.audit.events if e["event"] == "dicom.instance.store_failed"]
    assert len(refusals) == len(failed)

    subprocess.run(
        ["mount", "-o", f"remount,size={LARGER_TMPFS_SIZE}", str(small_filesystem)], check=True
    )
    assert [status_of(r) for r in pynetdicom_store(node.port, failed)] == [0] * len(failed)
    _assert_held_exactly(node, files)


def test_stopped_s3_server_answers_failure_and_ingest_resumes_when_it_is_back(
    box_node_factory: BoxNodeFactory, seaweedfs: SeaweedFS, s3_bucket: str, tmp_path: Path
) -> None:
    store = S3BlobStore(
        seaweedfs.endpoint,
        seaweedfs.access_key,
        seaweedfs.secret_key,
        s3_bucket,
        secure=False,
        region=seaweedfs.region,
    )
    node = box_node_factory(blobs=store)
    files = write_study(SyntheticStudy(seed="s3-outage", instances_per_series=6), tmp_path / "s")
    before, during, after = files[:2], files[2:4], files[4:]

    assert [status_of(r) for r in pynetdicom_store(node.port, before)] == [0, 0]
    seaweedfs.stop()
    try:
        statuses = [status_of(r) for r in pynetdicom_store(node.port, during)]
    finally:
        seaweedfs.start()

    assert statuses == [StorageStatus.OUT_OF_RESOURCES] * 2
    assert [status_of(r) for r in pynetdicom_store(node.port, during + after)] == [0] * 4
    _assert_held_exactly(node, files)
