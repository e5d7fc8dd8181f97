"""Index benchmark: add rate, QIDO by PatientID, unfiltered study listing.

Bounded (a few tens of seconds). Not a test. Examples::

    .venv/bin/python -m benchmarks.index --url sqlite:////tmp/bench.db
    .venv/bin/python -m benchmarks.index --url postgresql+psycopg://app@127.0.0.1:55432/bench
    .venv/bin/python -m benchmarks.index --url memory://

Reference (Orthanc 1.10, same machine, RECIPES.md): QIDO by PatientID 4.8 ms (200 studies),
9.2 ms (5,200); all-studies listing 4.0 s (5,200).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime

from drimbox.index import open_index
from drimbox.model import InstanceRecord, Level, Query, StoredBlob
from drimbox.ports import Index

__all__ = ["main"]

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
UID_ROOT = "1.2.826.0.1.3680043.10.1337.9"
STUDIES_PER_PATIENT = 4
MILLISECONDS = 1000.0


def _record(study: int, series: int, instance: int) -> InstanceRecord:
    patient = study // STUDIES_PER_PATIENT
    study_uid = f"{UID_ROOT}.{study}"
    series_uid = f"{study_uid}.{series}"
    sop_uid = f"{series_uid}.{instance}"
    attributes = {
        "PatientID": f"PAT{patient:06d}",
        "PatientName": f"PATIENT^NUMBER{patient}",
        "PatientBirthDate": "19700101",
        "PatientSex": "O",
        "StudyDate": f"2024{study % 12 + 1:02d}{study % 28 + 1:02d}",
        "StudyTime": f"{study % 24:02d}0000",
        "AccessionNumber": f"ACC{study:07d}",
        "StudyDescription": "Benchmark study",
        "ReferringPhysicianName": "REFERRING^DOCTOR",
        "Modality": "CT" if series % 2 == 0 else "MR",
        "SeriesNumber": str(series + 1),
        "InstanceNumber": str(instance + 1),
        "Rows": "512",
        "Columns": "512",
        "BitsAllocated": "16",
    }
    metadata = {"00080018": {"vr": "UI", "Value": [sop_uid]}}
    return InstanceRecord(
        sop_instance_uid=sop_uid,
        sop_class_uid=CT_IMAGE_STORAGE,
        series_instance_uid=series_uid,
        study_instance_uid=study_uid,
        transfer_syntax_uid=EXPLICIT_VR_LITTLE_ENDIAN,
        blob=StoredBlob(key=f"key-{sop_uid}", size=524_288, sha256="0" * 64),
        attributes=attributes,
        metadata=metadata,
        received_at=datetime.now(UTC),
        number_of_frames=1,
        pixel_data_offset=1024,
    )


def _fill(index: Index, first: int, last: int, series: int, instances: int) -> float:
    """Add studies ``first..last-1``; return instances per second."""
    started = time.perf_counter()
    count = 0
    for study in range(first, last):
        for series_number in range(series):
            for instance in range(instances):
                index.add_instance(_record(study, series_number, instance))
                count += 1
    return count / (time.perf_counter() - started)


def _median_ms(action: Callable[[], object], repeat: int) -> float:
    durations = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        durations.append((time.perf_counter() - started) * MILLISECONDS)
    return statistics.median(durations)


def _measure(index: Index, studies: int, repeat: int) -> None:
    patients = studies // STUDIES_PER_PATIENT

    def by_patient() -> None:
        patient = int(time.perf_counter_ns()) % patients
        query = Query(level=Level.STUDY, filters={"PatientID": f"PAT{patient:06d}"})
        assert len(index.search(query).matches) == STUDIES_PER_PATIENT

    def listing() -> None:
        assert len(index.search(Query(level=Level.STUDY)).matches) == studies

    print(f"  {studies:>5} studies: QIDO by PatientID {_median_ms(by_patient, repeat * 5):7.2f} ms")
    print(f"  {studies:>5} studies: all-studies listing {_median_ms(listing, repeat):7.2f} ms")


def main() -> None:
    """Run the benchmark against the index named by ``--url``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="index URL (sqlite:///, postgresql://...)")
    parser.add_argument("--studies", type=int, default=5000)
    parser.add_argument("--series", type=int, default=2, help="series per study")
    parser.add_argument("--instances", type=int, default=1, help="instances per series")
    parser.add_argument("--repeat", type=int, default=10)
    arguments = parser.parse_args()
    index = open_index(arguments.url)
    try:
        small = min(200, arguments.studies)
        rate = _fill(index, 0, small, arguments.series, arguments.instances)
        print(f"{arguments.url.split(':')[0]}: add_instance {rate:.0f} instances/s")
        _measure(index, small, arguments.repeat)
        if arguments.studies > small:
            rate = _fill(index, small, arguments.studies, arguments.series, arguments.instances)
            print(f"  add_instance {rate:.0f} instances/s (up to {arguments.studies} studies)")
            _measure(index, arguments.studies, arguments.repeat)
        print(f"  {index.statistics()}")
    finally:
        index.close()


if __name__ == "__main__":
    main()
