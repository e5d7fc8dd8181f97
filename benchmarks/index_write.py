"""Index write benchmark: wall time of ``Index.add_instance`` per new instance.

Bounded and deterministic: the records are built up front from synthetic 64x64 instances
(:mod:`drimbox.dicom.synthetic`, metadata by :mod:`drimbox.dicom.metadata`, as ingest builds
them), then added one by one, each add timed, including its durable commit. The first few adds
(schema warm-up, new patient/study/series rows) are left out of the figures. Not a test.
Examples::

    .venv/bin/python -m benchmarks.index_write --url sqlite:////tmp/bench-write.db
    .venv/bin/python -m benchmarks.index_write \\
        --url postgresql+psycopg://app@127.0.0.1:55432/bench

The SQLite file (or PostgreSQL database) should be empty: the benchmark refuses to count
duplicates as adds.

Reference (2 shared cores, load average 3-6.5, old then new code alternately, 2026-11-29):
SQLite median 1.0-2.2 ms per add before the driver-cursor add transaction, 0.48-0.8 ms after
(about 0.25 ms of it is the WAL fsync of ``synchronous=FULL``); PostgreSQL 15 median 2.1-3.6 ms
before, 1.1-2.1 ms after. Orthanc ingests such instances at about 1.7 ms each, end to end.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import statistics
import time
from datetime import UTC, datetime

from pydicom import dcmwrite

from drimbox.dicom.metadata import indexed_attribute_values, instance_metadata
from drimbox.dicom.part10 import read_data_set_header, read_file_meta
from drimbox.dicom.synthetic import SyntheticStudy, make_instance
from drimbox.index import open_index
from drimbox.model import AddOutcome, InstanceRecord, StoredBlob

__all__ = ["main"]

MILLISECONDS = 1000.0
MAX_INFLATED_BYTES = 1 << 20
"""Bound on inflated data sets (the synthetic instances are never deflated)."""
WARM_UP = 10
"""Adds left out of the figures (first statements, new parent rows)."""
DUPLICATES = 100
"""Instances added a second time, to time the duplicate outcome."""


def _record(study: SyntheticStudy, series: int, instance: int) -> InstanceRecord:
    """Build the record ingest would build for one synthetic instance."""
    buffer = io.BytesIO()
    dcmwrite(buffer, make_instance(study, series, instance), enforce_file_format=True)
    data = buffer.getvalue()
    stream = io.BytesIO(data)
    meta, data_set_offset = read_file_meta(stream)
    header = read_data_set_header(
        stream, meta.TransferSyntaxUID, max_inflated_bytes=MAX_INFLATED_BYTES
    )
    identity = {
        "study_instance_uid": study.study_instance_uid,
        "series_instance_uid": study.series_instance_uid(series),
        "sop_instance_uid": study.sop_instance_uid(series, instance),
    }
    metadata = instance_metadata(header.dataset, pixel_data=header.pixel_data, **identity)
    pixel = header.pixel_data
    offset = None if pixel is None else pixel.value_offset
    digest = hashlib.sha256(data).hexdigest()
    return InstanceRecord(
        sop_class_uid=str(meta.MediaStorageSOPClassUID),
        transfer_syntax_uid=str(meta.TransferSyntaxUID),
        blob=StoredBlob(key=f"sha256/{digest}", size=len(data), sha256=digest),
        attributes=indexed_attribute_values(metadata),
        metadata=metadata,
        received_at=datetime.now(UTC),
        number_of_frames=1,
        pixel_data_offset=None if offset is None else data_set_offset + offset,
        **identity,
    )


def _records(studies: int, series: int, instances: int) -> list[InstanceRecord]:
    records = []
    for number in range(studies):
        study = SyntheticStudy(
            seed=f"index-write-{number}",
            patient_id=f"PAT{number // 2:04d}",
            accession_number=f"ACC{number:05d}",
            series_count=series,
            instances_per_series=instances,
        )
        for series_number in range(series):
            for instance in range(instances):
                records.append(_record(study, series_number, instance))
    return records


def main() -> None:
    """Add synthetic instances to the index named by ``--url``; print ms per add."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="empty index (sqlite:///, postgresql://)")
    parser.add_argument("--studies", type=int, default=4)
    parser.add_argument("--series", type=int, default=2, help="series per study")
    parser.add_argument("--instances", type=int, default=150, help="instances per series")
    arguments = parser.parse_args()
    records = _records(arguments.studies, arguments.series, arguments.instances)
    index = open_index(arguments.url)
    durations: list[float] = []
    try:
        started = time.perf_counter()
        for record in records:
            before = time.perf_counter()
            outcome = index.add_instance(record)
            durations.append((time.perf_counter() - before) * MILLISECONDS)
            if outcome is not AddOutcome.STORED:
                raise SystemExit(f"{record.sop_instance_uid} not stored ({outcome}): empty index?")
        elapsed = time.perf_counter() - started
        timed = sorted(durations[WARM_UP:])
        duplicate_started = time.perf_counter()
        duplicates = records[:DUPLICATES]
        for record in duplicates:
            if index.add_instance(record) is not AddOutcome.DUPLICATE:
                raise SystemExit("a second add of an instance was not a duplicate")
        duplicate_ms = (time.perf_counter() - duplicate_started) * MILLISECONDS / len(duplicates)
    finally:
        index.close()
    percentile_90 = timed[int(len(timed) * 0.9)]
    print(
        f"{arguments.url.split(':')[0]}: {len(records)} adds, "
        f"{len(records) / elapsed:.0f} instances/s; ms per add: "
        f"median {statistics.median(timed):.3f}, mean {statistics.fmean(timed):.3f}, "
        f"p90 {percentile_90:.3f}; duplicate {duplicate_ms:.3f}"
    )


if __name__ == "__main__":
    main()
