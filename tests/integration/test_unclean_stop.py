"""After an unclean stop, index rows whose blob never became durable are removed at start.

Ingest commits an instance's index row while its blob is being synced, and acknowledges the
instance only once both are durable; a power loss in between can leave a row whose blob is
short or missing. The box records a clean stop in its data directory and, when the marker is
absent at start, checks the newest rows (drimbox.services.reconcile.check_newest_instances).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path

from pydicom.dataset import Dataset

from drimbox.audit import MemoryAuditLog
from drimbox.bootstrap import CLEAN_STOP_MARKER, Box
from drimbox.dicom.synthetic import SyntheticStudy, make_study
from drimbox.index import open_index
from drimbox.services.ingest import IngestService
from drimbox.services.reconcile import check_newest_instances
from drimbox.storage import FilesystemBlobStore
from drimbox.storage.keys import fan_out

STUDY = SyntheticStudy(seed="unclean-stop", instances_per_series=3)


def _part10(ds: Dataset) -> io.BytesIO:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return buffer


def _blob_path(root: Path, key: str) -> Path:
    return root.joinpath(*fan_out(key))


def test_rows_whose_blob_is_short_or_missing_are_removed_and_audited(tmp_path: Path) -> None:
    blobs = FilesystemBlobStore(tmp_path / "blobs")
    index = open_index(f"sqlite:///{tmp_path / 'index.sqlite3'}")
    audit = MemoryAuditLog()
    ingest = IngestService(blobs, index, audit, max_instance_bytes=1 << 24)
    stored = [ingest.store_part10(_part10(ds), source="TEST") for ds in make_study(STUDY)]
    short, gone, kept = (result.location for result in stored)
    with _blob_path(blobs.root, short.blob.key).open("r+b") as file:
        file.truncate(short.blob.size // 2)
    _blob_path(blobs.root, gone.blob.key).unlink()

    removed = check_newest_instances(blobs, index, audit)

    assert sorted(removed) == sorted([short.sop_instance_uid, gone.sop_instance_uid])
    assert [x.sop_instance_uid for x in index.newest_instances(10)] == [kept.sop_instance_uid]
    events = [e for e in audit.events if e["event"] == "dicom.instance.unindexed"]
    assert {e["sop_instance_uid"] for e in events} == set(removed)
    assert check_newest_instances(blobs, index, audit) == []
    index.close()


def test_the_box_checks_only_after_an_unclean_stop(
    box_factory: Callable[..., Box], tmp_path: Path
) -> None:
    data_dir = tmp_path / "box"
    box = box_factory(data_dir=data_dir)
    assert not (data_dir / CLEAN_STOP_MARKER).exists()  # running: a crash now is unclean
    [first, *_] = make_study(STUDY)
    location = box.ingest.store_part10(_part10(first), source="TEST").location
    box.stop()
    assert (data_dir / CLEAN_STOP_MARKER).exists()
    blobs_root = data_dir / "blobs"
    with _blob_path(blobs_root, location.blob.key).open("r+b") as file:
        file.truncate(10)  # damaged after a clean stop: not the start-up check's business

    box = box_factory(data_dir=data_dir)
    assert box.index.get_instance(location.sop_instance_uid) is not None
    assert not (data_dir / CLEAN_STOP_MARKER).exists()
    box.stop()
    os.unlink(data_dir / CLEAN_STOP_MARKER)  # as if the box had been killed

    box = box_factory(data_dir=data_dir)
    assert box.index.get_instance(location.sop_instance_uid) is None
