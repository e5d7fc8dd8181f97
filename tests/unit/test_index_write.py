"""The SQL index's add path: stored values, metadata text, SQLite writers' lock timeout."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from drimbox.index import SqliteIndex
from drimbox.index._records import flat_values, level_values, metadata_text
from drimbox.index._writelock import LOCK_SUFFIX, WriterLock
from drimbox.model import AddOutcome, InstanceRecord, Level, StoredBlob

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
SHORT_WAIT = 0.2


def _record(sop: str = "1.2.3.1.1", metadata: dict[str, Any] | None = None) -> InstanceRecord:
    return InstanceRecord(
        sop_instance_uid=sop,
        sop_class_uid=CT_IMAGE_STORAGE,
        series_instance_uid="1.2.3.1",
        study_instance_uid="1.2.3",
        transfer_syntax_uid=EXPLICIT_VR_LITTLE_ENDIAN,
        blob=StoredBlob(key=f"key-{sop}", size=10, sha256="0" * 64),
        attributes={
            "PatientID": None,
            "PatientName": "Dupont^Hélène",
            "ReferringPhysicianName": "",
            "StudyDate": "20240115",
            "Modality": "CT",
            "SeriesNumber": "2",
            "InstanceNumber": "x",
        },
        metadata=metadata or {"00080018": {"vr": "UI", "Value": [sop]}},
        received_at=datetime(2026, 1, 1, tzinfo=UTC),
        number_of_frames=1,
    )


@pytest.mark.parametrize(
    "value",
    [0.5, 1e-05, 1.5e-07, 0.0001, 1e16, -0.0, float("nan"), float("inf"), 2**70, "Hélène\x01"],
)
def test_metadata_text_is_exactly_what_the_json_module_writes(value: object) -> None:
    metadata = {"00280030": {"vr": "DS", "Value": [value]}}
    expected = json.dumps(metadata, separators=(",", ":"), ensure_ascii=False)
    assert metadata_text(_record(metadata=metadata)) == expected


def test_flat_values_hold_every_levels_stored_values() -> None:
    record = _record()
    values = flat_values(record)
    for level in (Level.PATIENT, Level.STUDY, Level.SERIES, Level.IMAGE):
        assert level_values(record, level).items() <= values.items()
    assert values["PatientID"] == ""
    assert values["ReferringPhysicianName"] is None
    assert values["PatientName_fuzzy"] == " DUPONT HELENE"
    assert (values["series_number_order"], values["instance_number_order"]) == (2, None)


def test_a_writer_goes_ahead_when_the_lock_stays_taken_past_its_timeout(tmp_path: Path) -> None:
    first = WriterLock(tmp_path / "x.db")
    second = WriterLock(tmp_path / "x.db", timeout=SHORT_WAIT)
    with first:
        started = time.monotonic()
        with second:
            waited = time.monotonic() - started
    assert SHORT_WAIT <= waited < 5
    with second:  # the timed-out writer released nothing it did not hold
        pass
    first.close()
    second.close()


def test_a_timed_writer_waits_for_the_lock_while_it_is_taken(tmp_path: Path) -> None:
    first, second = WriterLock(tmp_path / "x.db"), WriterLock(tmp_path / "x.db", timeout=5)
    entered = threading.Event()

    def write() -> None:
        with second:
            entered.set()

    with first:
        writer = threading.Thread(target=write)
        writer.start()
        assert not entered.wait(SHORT_WAIT)
    assert entered.wait(5)
    writer.join()
    first.close()
    second.close()


def test_concurrent_sqlite_adds_queue_and_store_each_instance_once(tmp_path: Path) -> None:
    index = SqliteIndex(tmp_path / "index.db")
    records = [_record(f"1.2.3.1.{number}") for number in range(40)]
    outcomes: list[AddOutcome] = []

    def add_all() -> None:
        outcomes.extend(index.add_instance(record) for record in records)

    threads = [threading.Thread(target=add_all) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count(AddOutcome.STORED) == len(records)
    assert index.statistics().instances == len(records)
    assert (tmp_path / f"index.db{LOCK_SUFFIX}").exists()
    index.close()
