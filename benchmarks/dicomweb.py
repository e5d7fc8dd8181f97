"""DICOMweb benchmark: the box against Orthanc (+ DICOMweb plugin), same machine, same run.

Run inside a private network namespace (Orthanc binds every interface)::

    bash tools/in-netns.sh .venv/bin/python -m benchmarks.dicomweb

Both servers hold the same synthetic data: a 300-slice 512x512 CT, then 200 and 5,000 small
studies. Each measure is the median of several runs over a keep-alive connection; ratios are
box/Orthanc for throughput and Orthanc/box for latencies (> 1 means the box is better).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI

from dicomweb import create_dicomweb_router
from drimbox.audit import MemoryAuditLog
from drimbox.dicom.synthetic import SyntheticStudy, make_instance, make_study
from drimbox.index.sqlite import SqliteIndex
from drimbox.services.ingest import IngestService
from drimbox.services.query import QueryService
from drimbox.services.retrieve import RetrieveService
from drimbox.storage.filesystem import FilesystemBlobStore

ORTHANC = Path("/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
CT = SyntheticStudy(seed="bench-ct", patient_id="BENCHCT", instances_per_series=300,
                    rows=512, columns=512)  # fmt: skip
SMALL_STUDIES = (200, 5000)
MAX_RESULTS = 10_000
AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'
MIB = 1 << 20


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _part10(dataset: object) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)  # type: ignore[attr-defined]
    return buffer.getvalue()


def small_study(number: int) -> SyntheticStudy:
    """The ``number``-th small study (one 8x8 instance, its own patient)."""
    return SyntheticStudy(seed=f"bench-small-{number}", patient_id=f"P{number:05d}",
                          instances_per_series=1, rows=8, columns=8)  # fmt: skip


def build_app(root: Path) -> tuple[FastAPI, IngestService]:
    """The box's DICOMweb surface over a filesystem store and a SQLite index (as by default)."""
    blobs = FilesystemBlobStore(root / "blobs")
    index = SqliteIndex(root / "index.sqlite3")
    audit = MemoryAuditLog()
    ingest = IngestService(blobs, index, audit, max_instance_bytes=2 * 1024**3)
    app = FastAPI()
    router = create_dicomweb_router(
        query=QueryService(index, max_results=MAX_RESULTS),
        retrieve=RetrieveService(blobs, index, audit),
        ingest=ingest,
        max_results=MAX_RESULTS,
    )
    app.include_router(router, prefix="/dicom-web")
    return app, ingest


def serve(root: Path, port: int) -> None:
    """Serve the box (subprocess entry point)."""
    app, _ = build_app(root)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")


def _wait(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited ({process.returncode})")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer")


@contextmanager
def box_server(root: Path) -> Iterator[str]:
    """Run the box in a subprocess; yield its DICOMweb URL."""
    port = _free_port()
    command = [sys.executable, "-m", "benchmarks.dicomweb", "--serve", str(root), str(port)]
    process = subprocess.Popen(command)
    try:
        _wait(f"http://127.0.0.1:{port}/dicom-web/studies?limit=1", process)
        yield f"http://127.0.0.1:{port}/dicom-web"
    finally:
        process.terminate()
        process.wait(timeout=30)


@contextmanager
def orthanc_server(root: Path) -> Iterator[str]:
    """Run Orthanc with the DICOMweb plugin; yield its REST root URL."""
    http_port = _free_port()
    config = {
        "Name": "BENCH", "StorageDirectory": str(root / "db"), "IndexDirectory": str(root / "db"),
        "HttpPort": http_port, "DicomPort": _free_port(), "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }  # fmt: skip
    (root / "config").mkdir(parents=True)
    (root / "config" / "orthanc.json").write_text(json.dumps(config))
    log = (root / "orthanc.log").open("wb")
    env = {**os.environ, "TCP_NODELAY": "1"}
    process = subprocess.Popen(
        [str(ORTHANC), str(root / "config")], stdout=log, stderr=log, env=env
    )
    try:
        _wait(f"http://127.0.0.1:{http_port}/system", process)
        yield f"http://127.0.0.1:{http_port}"
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


Sampler = Callable[[], float]
"""One measurement (seconds, or MiB/s for throughput)."""


def interleaved(samplers: dict[str, Sampler], runs: int) -> dict[str, float]:
    """Median of ``runs`` samples per server, taken in turn (box, Orthanc, box, ...).

    Alternating spreads the machine's load changes evenly over both servers.
    """
    for sampler in samplers.values():
        sampler()  # warm-up
    samples: dict[str, list[float]] = {name: [] for name in samplers}
    for _ in range(runs):
        for name, sampler in samplers.items():
            samples[name].append(sampler())
    return {name: statistics.median(values) for name, values in samples.items()}


def timed(action: Callable[[], object]) -> Sampler:
    """A sampler returning the wall time of ``action``."""

    def sample() -> float:
        start = time.perf_counter()
        action()
        return time.perf_counter() - start

    return sample


def stream_study(url: str) -> tuple[float, float, int]:
    """Retrieve a whole study as stored: (time to first byte, total time, bytes received).

    A raw socket reads into one reusable buffer, so the client's own cost (HTTP parsing in
    Python) does not cap what is measured: both servers are read the same way.
    """
    parsed = httpx.URL(url)
    request = (
        f"GET {parsed.raw_path.decode()} HTTP/1.1\r\nHost: {parsed.host}:{parsed.port}\r\n"
        f"Accept: {AS_STORED}\r\nConnection: close\r\n\r\n"
    ).encode()
    buffer = bytearray(4 * MIB)
    view = memoryview(buffer)
    start = time.perf_counter()
    with socket.create_connection((parsed.host, parsed.port or 80)) as connection:
        connection.sendall(request)
        size = connection.recv_into(view)
        first = time.perf_counter() - start
        if not buffer.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(bytes(buffer[:200]).decode(errors="replace"))
        while received := connection.recv_into(view):
            size += received
    return first, time.perf_counter() - start, size


def _get(client: httpx.Client, url: str, accept: str = "*/*") -> Callable[[], None]:
    def get() -> None:  # body received; parsing it is the client's business
        client.get(url, headers={"Accept": accept}).raise_for_status()

    return get


def measure_ct(servers: dict[str, str], runs: int, results: dict[str, dict[str, float]]) -> None:
    """WADO-RS of the CT (throughput, first byte), its /metadata, rendered and thumbnail."""
    study = f"/studies/{CT.study_instance_uid}"
    instance = f"{study}/series/{CT.series_instance_uid(0)}/instances/{CT.sop_instance_uid(0, 150)}"
    streams: dict[str, list[tuple[float, float, int]]] = {name: [] for name in servers}

    def streamer(name: str) -> Sampler:
        def sample() -> float:
            streams[name].append(stream_study(servers[name] + study))
            return 0.0

        return sample

    interleaved({name: streamer(name) for name in servers}, runs)
    for name, samples in streams.items():
        samples = samples[1:]  # warm-up
        results[name]["ttfb_ms"] = 1000 * statistics.median(s[0] for s in samples)
        results[name]["wado_mib_s"] = statistics.median(s[2] / s[1] for s in samples) / MIB
    with httpx.Client(timeout=300) as client:
        metadata = interleaved(
            {name: timed(_get(client, url + study + "/metadata")) for name, url in servers.items()},
            runs * 2,
        )
        for name, seconds in metadata.items():
            results[name]["metadata_ms"] = 1000 * seconds
        for resource in ("rendered", "thumbnail"):
            available = {}
            for name, url in servers.items():
                target = f"{url}{instance}/{resource}"
                status = client.get(target, headers={"Accept": "image/jpeg"}).status_code
                if status == 200:
                    available[name] = timed(_get(client, target, "image/jpeg"))
                else:
                    print(f"{name}: /{resource} answers {status}")
            for name, seconds in interleaved(available, runs * 2).items():
                results[name][f"{resource}_ms"] = 1000 * seconds


def measure_qido(
    servers: dict[str, str], key: str, runs: int, results: dict[str, dict[str, float]]
) -> None:
    """QIDO by PatientID (and the unfiltered listing once 5,000 studies are held)."""
    with httpx.Client(timeout=300) as client:
        for name, url in servers.items():
            found = client.get(f"{url}/studies?PatientID=P00042").json()
            assert len(found) == 1, (name, found)
        by_patient = interleaved(
            {
                name: timed(_get(client, f"{url}/studies?PatientID=P00042"))
                for name, url in servers.items()
            },
            runs * 4,
        )
        for name, seconds in by_patient.items():
            results[name][f"qido_patient_{key}_ms"] = 1000 * seconds
        if key == "5000":
            for name, url in servers.items():
                studies = client.get(f"{url}/studies").json()
                assert len(studies) >= SMALL_STUDIES[1], (name, len(studies))
            listing = interleaved(
                {name: timed(_get(client, f"{url}/studies")) for name, url in servers.items()},
                max(3, runs // 2),
            )
            for name, seconds in listing.items():
                results[name]["all_studies_ms"] = 1000 * seconds


def load_box(ingest: IngestService, studies: range) -> None:
    """Store studies through the box's ingest path (as C-STORE/STOW-RS would)."""
    for number in studies:
        for dataset in make_study(small_study(number)):
            ingest.store_part10(io.BytesIO(_part10(dataset)), source="bench")


def load_orthanc(rest: str, payloads: Iterator[bytes]) -> None:
    """POST instances to Orthanc's REST API."""
    with httpx.Client(timeout=120) as client:
        for payload in payloads:
            client.post(f"{rest}/instances", content=payload).raise_for_status()


def run(runs: int) -> None:
    """Load both servers, measure, print the table."""
    work = Path(tempfile.mkdtemp(prefix="dicomweb-bench-"))
    try:
        box_root = work / "box"
        _, ingest = build_app(box_root)
        print("generating and loading the 300-slice CT...", flush=True)
        ct = [_part10(make_instance(CT, 0, n)) for n in range(CT.instances_per_series)]
        for payload in ct:
            ingest.store_part10(io.BytesIO(payload), source="bench")
        load_box(ingest, range(SMALL_STUDIES[0]))
        results: dict[str, dict[str, float]] = {"drimbox": {}, "Orthanc": {}}
        with orthanc_server(work / "orthanc") as rest:
            load_orthanc(rest, iter(ct))
            del ct
            load_orthanc(
                rest,
                (_part10(ds) for n in range(SMALL_STUDIES[0]) for ds in make_study(small_study(n))),
            )
            with box_server(box_root) as url:
                servers = {"drimbox": url, "Orthanc": f"{rest}/dicom-web"}
                measure_ct(servers, runs, results)
                measure_qido(servers, "200", runs, results)
            print("loading 4,800 more studies in each...", flush=True)
            more = range(SMALL_STUDIES[0], SMALL_STUDIES[1])
            load_box(ingest, more)
            load_orthanc(rest, (_part10(ds) for n in more for ds in make_study(small_study(n))))
            with box_server(box_root) as url:
                servers = {"drimbox": url, "Orthanc": f"{rest}/dicom-web"}
                measure_qido(servers, "5000", runs, results)
        report(results["drimbox"], results["Orthanc"])
    finally:
        shutil.rmtree(work, ignore_errors=True)


ROWS = (
    ("WADO-RS whole CT study (MiB/s)", "wado_mib_s", True),
    ("WADO-RS time to first byte (ms)", "ttfb_ms", False),
    ("Study /metadata, 300 instances (ms)", "metadata_ms", False),
    ("QIDO by PatientID, 200 studies (ms)", "qido_patient_200_ms", False),
    ("QIDO by PatientID, 5,000 studies (ms)", "qido_patient_5000_ms", False),
    ("Unfiltered /studies, 5,000 studies (ms)", "all_studies_ms", False),
    ("Rendered instance (ms)", "rendered_ms", False),
    ("Instance thumbnail (ms)", "thumbnail_ms", False),
)


def report(box: dict[str, float], orthanc: dict[str, float]) -> None:
    """Print the comparison as a Markdown table (ratio > 1: the box is better)."""
    print("\n| Measure | drimbox | Orthanc | ratio |\n|---|---:|---:|---:|")
    for label, key, higher_is_better in ROWS:
        ours, theirs = box.get(key), orthanc.get(key)
        if ours is None:
            continue
        if theirs is None:
            print(f"| {label} | {ours:.1f} | n/a | n/a |")
            continue
        ratio = ours / theirs if higher_is_better else theirs / ours
        print(f"| {label} | {ours:.1f} | {theirs:.1f} | {ratio:.2f}x |")


def main() -> None:
    """Command line: run the benchmark, or serve the box (internal)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per measure (median)")
    parser.add_argument("--serve", nargs=2, metavar=("ROOT", "PORT"), help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.serve:
        serve(Path(arguments.serve[0]), int(arguments.serve[1]))
    else:
        run(arguments.runs)


if __name__ == "__main__":
    main()
