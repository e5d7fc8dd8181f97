"""Study stability: quiet studies are marked stable once, and subscribers are told."""

from __future__ import annotations

import io
import threading
from datetime import UTC, datetime, timedelta

from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from drimbox.audit import MemoryAuditLog
from drimbox.dicom.synthetic import SyntheticStudy, make_instance
from drimbox.index import MemoryIndex
from drimbox.services.ingest import IngestService
from drimbox.services.stability import StabilityMonitor
from drimbox.storage import MemoryBlobStore

START = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


class _Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


def _receive(ingest: IngestService, study: SyntheticStudy, instance: int) -> None:
    ds = make_instance(study, 0, instance)
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_dataset(buffer, ds)
    ingest.store_dataset(
        io.BytesIO(buffer.getvalue()),
        "1.2.840.10008.1.2.1",
        sop_class_uid=ds.SOPClassUID,
        sop_instance_uid=ds.SOPInstanceUID,
        source="TEST",
    )


def _box() -> tuple[IngestService, StabilityMonitor, _Clock]:
    clock = _Clock()
    index = MemoryIndex()
    ingest = IngestService(
        MemoryBlobStore(), index, MemoryAuditLog(), max_instance_bytes=1 << 24, clock=clock
    )
    return ingest, StabilityMonitor(index, quiet_seconds=10, clock=clock), clock


def test_study_becomes_stable_after_the_quiet_period_and_is_emitted_once() -> None:
    ingest, monitor, clock = _box()
    study = SyntheticStudy(seed="stable")
    emitted: list[str] = []
    monitor.subscribe(emitted.append)
    _receive(ingest, study, 0)

    clock.now = START + timedelta(seconds=9)
    assert monitor.poll_once() == []
    clock.now = START + timedelta(seconds=11)
    assert monitor.poll_once() == [study.study_instance_uid]
    assert monitor.poll_once() == []
    assert emitted == [study.study_instance_uid]


def test_a_new_instance_restarts_the_quiet_period_and_makes_the_study_unstable_again() -> None:
    ingest, monitor, clock = _box()
    study = SyntheticStudy(seed="restart")
    _receive(ingest, study, 0)
    clock.now = START + timedelta(seconds=8)
    _receive(ingest, study, 1)

    clock.now = START + timedelta(seconds=12)
    assert monitor.poll_once() == []
    clock.now = START + timedelta(seconds=19)
    assert monitor.poll_once() == [study.study_instance_uid]

    _receive(ingest, study, 2)
    clock.now = START + timedelta(seconds=30)
    assert monitor.poll_once() == [study.study_instance_uid]


def test_a_failing_subscriber_does_not_stop_the_others() -> None:
    ingest, monitor, clock = _box()
    emitted: list[str] = []

    def broken(study_instance_uid: str) -> None:
        raise RuntimeError("subscriber bug")

    monitor.subscribe(broken)
    monitor.subscribe(emitted.append)
    _receive(ingest, SyntheticStudy(seed="subscribers"), 0)
    clock.now = START + timedelta(minutes=1)

    monitor.poll_once()

    assert len(emitted) == 1


def test_background_thread_emits_and_stops_cleanly() -> None:
    clock = _Clock()
    index = MemoryIndex()
    ingest = IngestService(
        MemoryBlobStore(), index, MemoryAuditLog(), max_instance_bytes=1 << 24, clock=clock
    )
    monitor = StabilityMonitor(index, quiet_seconds=10, clock=clock, poll_interval=0.01)
    emitted = threading.Event()
    monitor.subscribe(lambda _: emitted.set())
    _receive(ingest, SyntheticStudy(seed="thread"), 0)
    clock.now = START + timedelta(minutes=1)

    monitor.start()
    try:
        assert emitted.wait(5)
    finally:
        monitor.stop()
    assert not any(t.name == "drimbox-stability" for t in threading.enumerate())
