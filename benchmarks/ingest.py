"""C-STORE ingest benchmark: the box against Orthanc, same machine, same run, same client.

Deterministic synthetic data (a 300-slice 512x512 CT, 2,000 small 64x64 instances) is sent by
dcmtk ``storescu`` (``TCP_NODELAY=1``) with 1 and 2 parallel associations, to a fresh box
(filesystem blob store + SQLite index, the embedded default, started in-process) and to a fresh
Orthanc. Prints instances/s, MiB/s and the box/Orthanc ratio.

Orthanc binds every interface, so run it in a private network namespace::

    bash tools/in-netns.sh .venv/bin/python -m benchmarks.ingest [--quick]

It takes a few minutes; ``--quick`` uses 60 CT slices and 400 small instances;
``--processes N`` runs the box as ``drimbox serve --dimse-processes N`` instead of in-process.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from drimbox.audit import FileAuditLog
from drimbox.dicom.synthetic import SyntheticStudy, write_study
from drimbox.dimse import configure_pynetdicom
from drimbox.dimse.scp import DimseServer
from drimbox.index import open_index
from drimbox.services.ingest import IngestService
from drimbox.storage import FilesystemBlobStore
from tests.fixtures.box import ServedBox, free_port
from tests.fixtures.orthanc import start_orthanc

__all__ = ["main"]

STORESCU = "/usr/bin/storescu"
BOX_AET = "DRIMBOX"
MIB = 1024 * 1024
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "drimbox-benchmark-data"
PARALLEL_ASSOCIATIONS = (1, 2)


@dataclass(frozen=True)
class Corpus:
    """A named list of Part 10 files."""

    name: str
    files: list[Path]

    @property
    def size(self) -> int:
        """Total size in bytes."""
        return sum(path.stat().st_size for path in self.files)


@dataclass(frozen=True)
class Measurement:
    """One timed send."""

    corpus: str
    associations: int
    target: str
    seconds: float
    instances: int
    size: int

    @property
    def instances_per_second(self) -> float:
        """Instances per second."""
        return self.instances / self.seconds

    @property
    def mib_per_second(self) -> float:
        """MiB per second."""
        return self.size / MIB / self.seconds


def make_corpora(cache: Path, *, quick: bool) -> list[Corpus]:
    """Write (once; reused from ``cache``) the CT and the small instances."""
    ct_slices, small_count = (60, 400) if quick else (300, 2000)
    ct = SyntheticStudy(
        seed=f"bench-ct-{ct_slices}",
        instances_per_series=ct_slices,
        rows=512,
        columns=512,
        patient_id="BENCH1",
    )
    small = SyntheticStudy(
        seed=f"bench-small-{small_count}",
        series_count=small_count // 100,
        instances_per_series=100,
        patient_id="BENCH2",
    )
    corpora = []
    for name, study in ((f"CT {ct_slices}x512x512", ct), (f"{small_count} x 64x64", small)):
        directory = cache / study.seed
        done = directory / ".complete"
        if not done.exists():
            print(f"generating {name} in {directory} ...", file=sys.stderr)
            write_study(study, directory)
            done.touch()
        corpora.append(Corpus(name, sorted(directory.glob("*.dcm"))))
    return corpora


def storescu(port: int, aet: str, files: list[Path]) -> subprocess.Popen[bytes]:
    """Start one storescu association sending ``files``."""
    return subprocess.Popen(
        [STORESCU, "-aec", aet, "127.0.0.1", str(port), *map(str, files)],
        env={**os.environ, "TCP_NODELAY": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def send(port: int, aet: str, corpus: Corpus, associations: int) -> float:
    """Send the corpus over ``associations`` parallel associations; return the wall time."""
    shares = [corpus.files[i::associations] for i in range(associations)]
    start = time.perf_counter()
    processes = [storescu(port, aet, share) for share in shares]
    for process in processes:
        _, stderr = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"storescu failed: {stderr.decode()[-2000:]}")
    return time.perf_counter() - start


@contextmanager
def box_target(directory: Path) -> Iterator[int]:
    """A fresh box (filesystem + SQLite, file audit trail) listening on a free port."""
    blobs = FilesystemBlobStore(directory / "blobs")
    index = open_index(f"sqlite:///{directory / 'index.sqlite3'}")
    audit = FileAuditLog(directory / "audit.jsonl")
    ingest = IngestService(blobs, index, audit, max_instance_bytes=2 * 1024**3)
    server = DimseServer(
        ae_title=BOX_AET,
        host="127.0.0.1",
        port=0,
        peers=(),
        loopback_only=True,
        ingest=ingest,
        audit=audit,
    )
    try:
        yield server.start()
    finally:
        server.stop()
        index.close()
        audit.close()


def served_box_target(processes: int) -> Callable[[Path], AbstractContextManager[int]]:
    """A fresh ``drimbox serve --dimse-processes N`` (the product's own multi-process path)."""

    @contextmanager
    def target(directory: Path) -> Iterator[int]:
        box = ServedBox(
            data_dir=directory / "data",
            dimse_port=free_port(),
            http_port=free_port(),
            hl7_port=free_port(),
            aet=BOX_AET,
            extra_args=["--dimse-processes", str(processes)],
        )
        box.start()
        try:
            yield box.dimse_port
        finally:
            box.stop()

    return target


@contextmanager
def orthanc_target(directory: Path) -> Iterator[int]:
    """A fresh Orthanc listening on a free DICOM port."""
    server = start_orthanc(directory)
    try:
        yield server.dicom_port
    finally:
        server.stop()


def measure(
    corpora: list[Corpus],
    work: Path,
    targets: dict[str, tuple[str, Callable[[Path], AbstractContextManager[int]]]],
) -> list[Measurement]:
    """Run every (corpus, associations, target) combination once, each on a fresh target."""
    results = []
    for corpus in corpora:
        for associations in PARALLEL_ASSOCIATIONS:
            for name, (aet, factory) in targets.items():
                directory = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=work))
                with factory(directory) as port:
                    seconds = send(port, aet, corpus, associations)
                result = Measurement(
                    corpus.name, associations, name, seconds, len(corpus.files), corpus.size
                )
                print(
                    f"{corpus.name:>18} x{associations} {name:>7}: "
                    f"{result.instances_per_second:8.1f} inst/s {result.mib_per_second:7.1f} MiB/s",
                    file=sys.stderr,
                )
                results.append(result)
    return results


def table(results: list[Measurement]) -> str:
    """Format the measurements as a Markdown table with the box/Orthanc ratio."""
    lines = [
        "| data | assoc. | box inst/s | box MiB/s | Orthanc inst/s | Orthanc MiB/s | ratio |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    keyed = {(r.corpus, r.associations, r.target): r for r in results}
    for corpus, associations in dict.fromkeys((r.corpus, r.associations) for r in results):
        box = keyed[(corpus, associations, "box")]
        pacs = keyed[(corpus, associations, "orthanc")]
        ratio = box.instances_per_second / pacs.instances_per_second
        lines.append(
            f"| {corpus} | {associations} | {box.instances_per_second:.0f} | "
            f"{box.mib_per_second:.1f} | {pacs.instances_per_second:.0f} | "
            f"{pacs.mib_per_second:.1f} | {ratio:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Generate the data, run the benchmark, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller data (a quick check)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where data is kept")
    parser.add_argument(
        "--processes",
        type=int,
        default=0,
        help="run the box as `drimbox serve --dimse-processes N` (default: in-process, one "
        "process, filesystem + SQLite)",
    )
    arguments = parser.parse_args(argv)
    configure_pynetdicom()
    corpora = make_corpora(arguments.cache, quick=arguments.quick)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with tempfile.TemporaryDirectory(prefix="drimbox-bench-", dir="/var/tmp") as work:
        results = measure(
            corpora,
            Path(work),
            {
                "box": (
                    BOX_AET,
                    box_target
                    if not arguments.processes
                    else served_box_target(arguments.processes),
                ),
                "orthanc": ("PACS", orthanc_target),
            },
        )
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(table(results))
    before, after = rss_before // 1024, rss_after // 1024
    print(f"\nbox process peak RSS: {before} MiB before the runs, {after} MiB after")
    return 0


if __name__ == "__main__":
    sys.exit(main())
