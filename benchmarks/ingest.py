"""C-STORE ingest benchmark: the box against Orthanc, same machine, same run, same client.

Deterministic synthetic data (a 300-slice 512x512 CT, 2,000 small 64x64 instances) is sent by
dcmtk ``storescu`` (``TCP_NODELAY=1``) with 1 and 2 parallel associations to a fresh
``drimbox serve`` (filesystem blob store + SQLite index, the embedded default) with one DIMSE
process and with ``--dimse-processes 2``, and to a fresh Orthanc. Prints instances/s, MiB/s,
the box/Orthanc ratio, and the box's peak resident memory (VmHWM of every box process) after
each run, to show that memory stays flat whatever the data.

Orthanc binds every interface, so run it in a private network namespace::

    bash tools/in-netns.sh .venv/bin/python -m benchmarks.ingest [--quick] [--repeat N]

It takes a few minutes; ``--quick`` uses 60 CT slices and 400 small instances; ``--processes``
chooses the box configurations (default ``1,2``); ``--repeat N`` runs everything N times,
interleaved (the order of the targets rotated each round), and reports the median rates and
the median of the rounds' box/Orthanc ratios.

On ext4 without a journal (as on the development VM), creating a file skips the inodes freed
in the last minutes, one by one: right after a large deletion (the previous run's clean-up,
a test suite) every target stores files markedly slower. Leave a few minutes between runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from drimbox.dicom.synthetic import SyntheticStudy, write_study
from tests.fixtures.box import ServedBox, free_port
from tests.fixtures.orthanc import start_orthanc

__all__ = ["main"]

STORESCU = "/usr/bin/storescu"
BOX_AET = "DRIMBOX"
MIB = 1024 * 1024
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "drimbox-benchmark-data"
PARALLEL_ASSOCIATIONS = (1, 2)
KIB = 1024


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
    peak_rss_mib: float | None = None
    round: int = 0

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
            raise RuntimeError(
                f"storescu failed (exit status {process.returncode}): {stderr.decode()[-2000:]}"
            )
    return time.perf_counter() - start


def _peak_rss_mib(pid: int) -> float:
    """Sum of VmHWM (peak resident set) of ``pid`` and its child processes, in MiB."""
    total = 0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(child) for child in children.read_text().split()]
    for number in pids:
        for line in Path(f"/proc/{number}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1])
    return total / KIB


@dataclass
class Target:
    """Where a run sends: its AE title and, once started, its port and process."""

    name: str
    aet: str
    start: Callable[[Path], AbstractContextManager[tuple[int, int | None]]]


def served_box_target(processes: int) -> Target:
    """A fresh ``drimbox serve --dimse-processes N``: the product as it is run."""

    @contextmanager
    def start(directory: Path) -> Iterator[tuple[int, int | None]]:
        box = ServedBox(
            data_dir=directory / "data",
            dimse_port=free_port(),
            http_port=free_port(),
            hl7_port=free_port(),
            aet=BOX_AET,
            dimse_processes=processes,
        )
        box.start()
        try:
            yield box.dimse_port, box.process.pid if box.process else None
        finally:
            box.stop()

    name = "box" if processes == 1 else f"box {processes}p"
    return Target(name, BOX_AET, start)


@contextmanager
def _start_orthanc(directory: Path) -> Iterator[tuple[int, int | None]]:
    server = start_orthanc(directory)
    try:
        yield server.dicom_port, None
    finally:
        server.stop()


ORTHANC = Target("orthanc", "PACS", _start_orthanc)


def measure(
    corpora: list[Corpus], work: Path, targets: list[Target], round_number: int = 0
) -> list[Measurement]:
    """Run every (corpus, associations, target) combination once, each on a fresh target.

    The targets of one (corpus, associations) run back to back, in an order rotated by
    ``round_number``: over the rounds each one runs first, and each box run is compared with
    the Orthanc run next to it in time (the machine's speed drifts over minutes).
    """
    results = []
    shift = round_number % len(targets)
    ordered = targets[shift:] + targets[:shift]
    for corpus in corpora:
        for associations in PARALLEL_ASSOCIATIONS:
            for target in ordered:
                directory = Path(tempfile.mkdtemp(prefix=f"{target.name[:3]}-", dir=work))
                with target.start(directory) as (port, pid):
                    seconds = send(port, target.aet, corpus, associations)
                    peak = _peak_rss_mib(pid) if pid is not None else None
                result = Measurement(
                    corpus.name,
                    associations,
                    target.name,
                    seconds,
                    len(corpus.files),
                    corpus.size,
                    peak,
                    round_number,
                )
                memory = f" peak RSS {peak:5.0f} MiB" if peak is not None else ""
                print(
                    f"{corpus.name:>18} x{associations} {target.name:>7}: "
                    f"{result.instances_per_second:8.1f} inst/s "
                    f"{result.mib_per_second:7.1f} MiB/s{memory}",
                    file=sys.stderr,
                )
                results.append(result)
    return results


def table(results: list[Measurement]) -> str:
    """Format median measurements as a Markdown table with each box's ratio to Orthanc.

    A ratio is the median of the rounds' ratios (each box run against the Orthanc run of the
    same round), not the ratio of the medians.
    """
    boxes = list(dict.fromkeys(r.target for r in results if r.target != ORTHANC.name))
    header = "| data | assoc. | Orthanc inst/s | " + " | ".join(
        f"{box} inst/s | {box} MiB/s | {box} / Orthanc | {box} peak RSS MiB" for box in boxes
    )
    lines = [header + " |", "|---|---:|---:|" + "---:|" * (4 * len(boxes))]
    grouped: dict[tuple[str, int, str], list[Measurement]] = {}
    for r in results:
        grouped.setdefault((r.corpus, r.associations, r.target), []).append(r)

    def median(key: tuple[str, int, str]) -> Measurement:
        runs = sorted(grouped[key], key=lambda r: r.instances_per_second)
        return runs[len(runs) // 2]

    def paired_ratio(corpus: str, associations: int, box: str) -> float:
        orthanc = {r.round: r for r in grouped[(corpus, associations, ORTHANC.name)]}
        return statistics.median(
            r.instances_per_second / orthanc[r.round].instances_per_second
            for r in grouped[(corpus, associations, box)]
            if r.round in orthanc
        )

    for corpus, associations in dict.fromkeys((r.corpus, r.associations) for r in results):
        pacs = median((corpus, associations, ORTHANC.name))
        cells = [corpus, str(associations), f"{pacs.instances_per_second:.0f}"]
        for box in boxes:
            mine = median((corpus, associations, box))
            ratio = paired_ratio(corpus, associations, box)
            peak = f"{mine.peak_rss_mib:.0f}" if mine.peak_rss_mib is not None else "-"
            cells += [
                f"{mine.instances_per_second:.0f}",
                f"{mine.mib_per_second:.1f}",
                f"**{ratio:.2f}**",
                peak,
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Generate the data, run the benchmark, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller data (a quick check)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where data is kept")
    parser.add_argument(
        "--processes",
        default="1,2",
        help="box configurations: comma-separated `--dimse-processes` values (default 1,2)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs of everything (median)")
    arguments = parser.parse_args(argv)
    corpora = make_corpora(arguments.cache, quick=arguments.quick)
    targets = [served_box_target(int(n)) for n in arguments.processes.split(",")] + [ORTHANC]
    results: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="drimbox-bench-", dir="/var/tmp") as work:
        for round_number in range(max(1, arguments.repeat)):
            results += measure(corpora, Path(work), targets, round_number)
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
