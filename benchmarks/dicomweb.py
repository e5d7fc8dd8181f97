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


def median_seconds(action: Callable[[], object], runs: int) -> float:
    """Median wall time of ``action`` over ``runs`` runs (after one warm-up)."""
    action()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def stream_study(client: httpx.Client, url: str) -> tuple[float, float, int]:
    """Retrieve a whole study as stored: (time to first byte, total time, bytes)."""
    start = time.perf_counter()
    first = 0.0
    size = 0
    with client.stream("GET", url, headers={"Accept": AS_STORED}) as response:
        response.raise_for_status()
        for chunk in response.iter_raw(1 << 20):
            if not size:
                first = time.perf_counter() - start
            size += len(chunk)
    return first, time.perf_counter() - start, size


def measure(name: str, dicomweb: str, runs: int) -> dict[str, float]:
    """Measure the CT retrieval and metadata on one server."""
    results: dict[str, float] = {}
    study = f"{dicomweb}/studies/{CT.study_instance_uid}"
    series = f"{study}/series/{CT.series_instance_uid(0)}"
    instance = f"{series}/instances/{CT.sop_instance_uid(0, 150)}"
    with httpx.Client(timeout=300) as client:
        stream_study(client, study)
        samples = [stream_study(client, study) for _ in range(runs)]
        results["ttfb_ms"] = 1000 * statistics.median(s[0] for s in samples)
        results["wado_mib_s"] = statistics.median(s[2] / s[1] for s in samples) / MIB
        results["metadata_ms"] = 1000 * median_seconds(
            lambda: client.get(f"{study}/metadata").raise_for_status(), runs * 2
        )
        for resource in ("rendered", "thumbnail"):
            target = f"{instance}/{resource}"
            response = client.get(target, headers={"Accept": "image/jpeg"})
            if response.status_code == 200:

                def get(url: str = target) -> None:
                    client.get(url, headers={"Accept": "image/jpeg"}).raise_for_status()

                results[f"{resource}_ms"] = 1000 * median_seconds(get, runs * 2)
            else:
                print(f"{name}: /{resource} answers {response.status_code}")
    return results


def qido(dicomweb: str, key: str, runs: int, results: dict[str, float]) -> None:
    """QIDO by PatientID (and the unfiltered listing once 5,000 studies are held)."""
    with httpx.Client(timeout=300) as client:
        patient = f"{dicomweb}/studies?PatientID=P00042"

        def by_patient() -> None:
            response = client.get(patient)
            response.raise_for_status()
            assert len(response.json()) == 1, (patient, response.text[:200])

        results[f"qido_patient_{key}_ms"] = 1000 * median_seconds(by_patient, runs * 4)
        if key == "5000":

            def listing() -> None:
                response = client.get(f"{dicomweb}/studies")
                response.raise_for_status()
                assert len(response.json()) >= 5000, len(response.json())

            results["all_studies_ms"] = 1000 * median_seconds(listing, max(3, runs // 2))


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
        box: dict[str, float] = {}
        orthanc: dict[str, float] = {}
        with orthanc_server(work / "orthanc") as rest:
            load_orthanc(rest, iter(ct))
            del ct
            load_orthanc(
                rest,
                (_part10(ds) for n in range(SMALL_STUDIES[0]) for ds in make_study(small_study(n))),
            )
            with box_server(box_root) as url:
                box.update(measure("box", url, runs))
                qido(url, "200", runs, box)
            orthanc.update(measure("orthanc", f"{rest}/dicom-web", runs))
            qido(f"{rest}/dicom-web", "200", runs, orthanc)
            print("loading 4,800 more studies in each...", flush=True)
            more = range(SMALL_STUDIES[0], SMALL_STUDIES[1])
            load_box(ingest, more)
            load_orthanc(rest, (_part10(ds) for n in more for ds in make_study(small_study(n))))
            with box_server(box_root) as url:
                qido(url, "5000", runs, box)
            qido(f"{rest}/dicom-web", "5000", runs, orthanc)
        report(box, orthanc)
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
