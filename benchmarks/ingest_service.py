"""Milliseconds per :meth:`IngestService.store_dataset`, without DIMSE: where ingest CPU goes.

Stores data sets (as a C-STORE receiver hands them over: an ``io.BytesIO`` positioned at the
data set's first byte) into the embedded default (filesystem blob store + SQLite index + file
audit trail) and prints, for small 64x64 instances and 512x512 CT slices, the wall-clock and
CPU milliseconds per instance end to end, then of each step measured alone (fastest of three
rounds): header parse (with the identity checks), DICOM JSON metadata (with the indexed
values), blob put (durable: file and directory fsync'ed), audit record; the rest of the total
is the index add and the service's own work.

Bounded: ``--instances`` data sets per corpus (default 300), each stored once, after a warm-up::

    .venv/bin/python -m benchmarks.ingest_service [--instances 300] [--profile]

``--profile`` adds a cProfile of parse + metadata (small instances), sorted by own time;
``--directory /dev/shm`` (a tmpfs) shows the costs without the disk's syncs. The corpora are
written once to the cache shared with :mod:`benchmarks.ingest`.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from drimbox.audit import FileAuditLog
from drimbox.dicom.metadata import indexed_attribute_values, instance_metadata
from drimbox.dicom.part10 import (
    DataSetHeader,
    encode_file_meta,
    read_data_set_header,
    read_file_meta,
)
from drimbox.dicom.synthetic import SyntheticStudy, write_study
from drimbox.dicom.uids import InstanceIdentity, instance_identity
from drimbox.index import open_index
from drimbox.services.ingest import IngestService
from drimbox.storage import FilesystemBlobStore

__all__ = ["main"]

DEFAULT_CACHE = Path(tempfile.gettempdir()) / "drimbox-benchmark-data"
WARM_UP = 20
ROUNDS = 3  # each step alone: the fastest of this many rounds
MAX_INSTANCE_BYTES = 1 << 30
SOURCE = "BENCH@127.0.0.1"


@dataclass(frozen=True, slots=True)
class Received:
    """One data set as a C-STORE receiver hands it over."""

    dataset: bytes
    transfer_syntax_uid: str
    sop_class_uid: str
    sop_instance_uid: str


def corpus(name: str, study: SyntheticStudy, cache: Path, count: int) -> list[Received]:
    """Read (writing them once into ``cache``) ``count`` data sets of ``study``."""
    directory = cache / study.seed
    if not (directory / ".complete").exists():
        print(f"generating {name} in {directory} ...", file=sys.stderr)
        write_study(study, directory)
        (directory / ".complete").touch()
    received = []
    for path in sorted(directory.glob("*.dcm"))[:count]:
        data = path.read_bytes()
        meta, offset = read_file_meta(io.BytesIO(data))
        received.append(
            Received(
                data[offset:],
                str(meta.TransferSyntaxUID),
                str(meta.MediaStorageSOPClassUID),
                str(meta.MediaStorageSOPInstanceUID),
            )
        )
    return received


def per_instance_ms(
    items: Sequence[Received], step: Callable[[Received], object], rounds: int = 1
) -> tuple[float, float]:
    """Run ``step`` on every item, the first ones as a warm-up; ms per measured item.

    Returns the wall-clock and the CPU time (of the whole process: helper threads included)
    per item; with several ``rounds`` the fastest round counts (the machine may be shared: CPU
    time is the steadier figure).
    """
    for item in items[:WARM_UP]:
        step(item)
    measured = items[WARM_UP:]
    wall = cpu = float("inf")
    for _ in range(rounds):
        started, started_cpu = time.perf_counter(), time.process_time()
        for item in measured:
            step(item)
        wall = min(wall, time.perf_counter() - started)
        cpu = min(cpu, time.process_time() - started_cpu)
    return wall / len(measured) * 1e3, cpu / len(measured) * 1e3


def measure(name: str, items: list[Received], directory: Path, profile: bool) -> None:
    """Print the per-instance milliseconds of a whole store and of each step alone."""
    blobs = FilesystemBlobStore(directory / "blobs")
    index = open_index(f"sqlite:///{directory / 'index.db'}")
    audit = FileAuditLog(directory / "audit.jsonl")
    ingest = IngestService(blobs, index, audit, max_instance_bytes=MAX_INSTANCE_BYTES)

    def store(item: Received) -> object:
        return ingest.store_dataset(
            io.BytesIO(item.dataset),
            item.transfer_syntax_uid,
            sop_class_uid=item.sop_class_uid,
            sop_instance_uid=item.sop_instance_uid,
            source=SOURCE,
        )

    def parse(item: Received) -> tuple[InstanceIdentity, DataSetHeader]:
        stream = io.BytesIO(item.dataset)
        header = read_data_set_header(
            stream, item.transfer_syntax_uid, max_inflated_bytes=MAX_INSTANCE_BYTES
        )
        return instance_identity(header.dataset), header

    def metadata(item: Received) -> object:
        identity, header = parsed[item.sop_instance_uid]
        document = instance_metadata(
            header.dataset,
            study_instance_uid=identity.study_instance_uid,
            series_instance_uid=identity.series_instance_uid,
            sop_instance_uid=identity.sop_instance_uid,
            pixel_data=header.pixel_data,
        )
        return indexed_attribute_values(document)

    def put(item: Received) -> object:
        meta = encode_file_meta(item.sop_class_uid, item.sop_instance_uid, item.transfer_syntax_uid)
        return blobs.put((meta, item.dataset))

    def record(item: Received) -> None:
        audit.record("benchmark", "success", source=SOURCE, sop_instance_uid=item.sop_instance_uid)

    try:
        total = per_instance_ms(items, store)
        parsed = {item.sop_instance_uid: parse(item) for item in items}
        steps = {
            "header parse": per_instance_ms(items, parse, ROUNDS),
            "metadata": per_instance_ms(items, metadata, ROUNDS),
            "blob put": per_instance_ms(items, put, ROUNDS),
            "audit record": per_instance_ms(items, record, ROUNDS),
        }
        if profile:
            profiler = cProfile.Profile()
            profiler.runcall(lambda: [parse(item) and metadata(item) for item in items])
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    finally:
        audit.close()
        index.close()
    wall, cpu = total
    print(f"{name}: {len(items) - WARM_UP} instances, ms per instance (wall / CPU)")
    print(f"  {'store_dataset':<14} {wall:6.3f} / {cpu:6.3f}")
    for step, (step_wall, step_cpu) in steps.items():
        print(f"  {step:<14} {step_wall:6.3f} / {step_cpu:6.3f}")
    rest_wall = wall - sum(w for w, _ in steps.values())
    rest_cpu = cpu - sum(c for _, c in steps.values())
    print(f"  {'index + rest':<14} {rest_wall:6.3f} / {rest_cpu:6.3f}")


def main(argv: list[str] | None = None) -> int:
    """Measure small instances, then CT slices."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=300, help="data sets per corpus")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--profile", action="store_true", help="cProfile parse + metadata")
    parser.add_argument(
        "--directory",
        type=Path,
        default=Path("/var/tmp"),
        help="where the blob store, index and audit trail go (a disk, not a tmpfs, by default; "
        "a tmpfs such as /dev/shm shows the cost without the disk's syncs)",
    )
    args = parser.parse_args(argv)
    small = SyntheticStudy(
        seed="bench-small-400", series_count=4, instances_per_series=100, patient_id="BENCH2"
    )
    ct = SyntheticStudy(
        seed="bench-ct-300", instances_per_series=300, rows=512, columns=512, patient_id="BENCH1"
    )
    count = max(WARM_UP + 1, args.instances)
    for name, study in (("small 64x64", small), ("CT 512x512", ct)):
        items = corpus(name, study, args.cache, count)
        with tempfile.TemporaryDirectory(dir=args.directory) as directory:
            measure(name, items, Path(directory), args.profile and study is small)
    return 0


if __name__ == "__main__":
    sys.exit(main())
