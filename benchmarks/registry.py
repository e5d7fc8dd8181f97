"""Registry benchmark: publish throughput (HTTP), search by patient p50/p99 at scale, storage.

Bounded; not a test. Run it against an EMPTY database::

    .venv/bin/python -m benchmarks.registry --url sqlite:////tmp/registry-bench.db
    .venv/bin/python -m benchmarks.registry --url postgresql+psycopg://app@127.0.0.1:55432/bench

Steps: (1) start the registry as its own process (``python -m registry.service.cli``, uvicorn on
127.0.0.1); (2) publish ``--publish`` real, distinct KOS manifests (ITI-65 Bundles) through the
HTTP API from ``--threads`` threads with a lean client (the Bundles are encoded before the clock
starts and sent over persistent keep-alive sockets, so that the load generator, which shares the
machine's cores, costs little of what is measured), then ``--publish-box`` more with the box's
own :class:`~registry.client.RegistryClient` (httpx); each answer is checked (a created entry)
and the stored entries are counted afterwards; the CPU time of the server, the client and
PostgreSQL per publish is reported; (3) bulk-fill to ``--entries`` with the deterministic loader;
(4) search by patient (status=current) ``--searches`` times at the store level and through the
HTTP API; (5) measure the storage per entry. Targets (issue 4): publish >= 500/s; search by
patient p99 < 10 ms at 10 M entries on PostgreSQL.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
from sqlalchemy import func, select, text

from registry._fhir import FHIR_JSON, provide_document_bundle
from registry.client import RegistryClient
from registry.loader import (
    ENTRIES_PER_PATIENT,
    load_synthetic_entries,
    synthetic_entries,
    synthetic_patient,
)
from registry.models import EntryStatus, ManifestSubmission
from registry.service._schema import documents, entries
from registry.service.store import EntryQuery, RegistryStore

__all__ = ["main"]

MILLISECONDS = 1000.0
_PUBLISH_SEED = 7  # other UIDs than the bulk fill (seed 0)
_BOX_SEED = 8  # the box client's publishes
_SEARCH_SEED = 11
_HEADER_END = b"\r\n\r\n"
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
_RECEIVE_BYTES = 65536
_CREATED = "201 Created"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
#: /proc/<pid>/stat fields after the command name: state (0), ppid (1), utime (11), stime (12).
_STAT_PPID, _STAT_UTIME, _STAT_STIME = 1, 11, 12


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def pick(quantile: float) -> float:
        return ordered[min(len(ordered) - 1, int(quantile * len(ordered)))]

    return {
        "p50_ms": round(pick(0.50) * MILLISECONDS, 3),
        "p99_ms": round(pick(0.99) * MILLISECONDS, 3),
        "mean_ms": round(statistics.fmean(ordered) * MILLISECONDS, 3),
    }


def _start_server(
    url: str, workers: int, audit: Path | None
) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "registry.service.cli",
            "--http-port",
            str(port),
            "--database",
            url,
            "--workers",
            str(workers),
            *([] if audit is None else ["--audit", str(audit)]),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/registry"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/metadata", timeout=1).status_code == httpx.codes.OK:
                return process, base
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("the registry server did not start")


def _stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        return stat.read().rsplit(")", 1)[1].split()


def _tree_cpu(root: int | None) -> float:
    """Return the CPU seconds (user + system) of ``root`` and its children, 0 if unknown."""
    if root is None:
        return 0.0
    total = 0.0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = _stat(int(entry.name))
        except OSError:  # ended meanwhile
            continue
        if int(entry.name) == root or int(fields[_STAT_PPID]) == root:
            total += (int(fields[_STAT_UTIME]) + int(fields[_STAT_STIME])) / _CLOCK_TICKS
    return total


def _postmaster(store: RegistryStore) -> int | None:
    """Return the PostgreSQL server's process id when it runs on this machine, else ``None``."""
    if store.dialect != "postgresql":
        return None
    with store.engine.connect() as connection:
        directory = connection.execute(text("SHOW data_directory")).scalar_one()
    try:
        return int((Path(directory) / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError):
        return None


class _CpuMeter:
    """CPU seconds spent by the server, this process (the client) and the database."""

    def __init__(self, server: int, database: int | None) -> None:
        self._server, self._database = server, database
        self._start = self._now()

    def _now(self) -> tuple[float, float, float]:
        own = resource.getrusage(resource.RUSAGE_SELF)
        return (
            _tree_cpu(self._server),
            own.ru_utime + own.ru_stime,
            _tree_cpu(self._database),
        )

    def per_publish_ms(self, count: int) -> dict[str, float]:
        spent = [end - start for start, end in zip(self._start, self._now(), strict=True)]
        return {
            f"cpu_{part}_ms_per_publish": round(seconds / count * MILLISECONDS, 3)
            for part, seconds in zip(("server", "client", "database"), spent, strict=True)
        }


def _answer(sock: socket.socket, pending: bytearray) -> tuple[int, bytes]:
    """Read one HTTP/1.1 answer (``Content-Length`` framed) from a keep-alive connection."""

    def receive() -> bytes:
        chunk = sock.recv(_RECEIVE_BYTES)
        if not chunk:
            raise ConnectionError("the registry closed the connection")
        return chunk

    while (end := pending.find(_HEADER_END)) < 0:
        pending += receive()
    head = bytes(pending[:end])
    length = _CONTENT_LENGTH.search(head)
    if length is None:
        raise ConnectionError(f"answer without Content-Length: {head[:80]!r}")
    total = end + len(_HEADER_END) + int(length[1])
    while len(pending) < total:
        pending += receive()
    body = bytes(pending[end + len(_HEADER_END) : total])
    del pending[:total]
    return int(head.split(b" ", 2)[1]), body


def _created_entry(status: int, body: bytes) -> str:
    """Return the id of the entry an ITI-65 answer reports as created, or fail."""
    if status == httpx.codes.OK:
        for entry in orjson.loads(body).get("entry", []):
            response = entry.get("response", {})
            location = str(response.get("location", ""))
            if response.get("status") == _CREATED and location.startswith("DocumentReference/"):
                return location.split("/", 1)[1]
    raise RuntimeError(f"publish not created: HTTP {status} {body[:200]!r}")


def _run_threads(parts: list[list[Any]], work: Callable[[list[Any]], None]) -> float:
    """Run ``work`` on each part in its own thread; return the elapsed seconds."""
    failures: list[BaseException] = []

    def guarded(part: list[Any]) -> None:
        try:
            work(part)
        except BaseException as error:  # reported by the main thread
            failures.append(error)

    workers = [threading.Thread(target=guarded, args=(part,)) for part in parts]
    began = time.perf_counter()
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    elapsed = time.perf_counter() - began
    if failures:
        raise SystemExit(f"publish failed: {failures[0]!r}")
    return elapsed


def _publish_lean(
    base: str, count: int, threads: int, meter: Callable[[], _CpuMeter]
) -> dict[str, float]:
    """Publish ``count`` pre-encoded Bundles over keep-alive sockets (lean load generator)."""
    url = urlsplit(base)
    head = (
        f"POST {url.path}/ HTTP/1.1\r\nHost: {url.netloc}\r\n"
        f"Content-Type: {FHIR_JSON}\r\nContent-Length: "
    ).encode()
    requests = []
    for manifest, kos, _ in synthetic_entries(count, seed=_PUBLISH_SEED):
        body = orjson.dumps(provide_document_bundle(manifest, kos))
        requests.append(b"%s%d\r\n\r\n%s" % (head, len(body), body))
    latencies: list[float] = []
    created: list[str] = []

    def send(part: list[bytes]) -> None:
        pending = bytearray()
        with socket.create_connection((url.hostname, url.port)) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for request in part:
                began = time.perf_counter()
                sock.sendall(request)
                entry = _created_entry(*_answer(sock, pending))
                latencies.append(time.perf_counter() - began)  # list.append: atomic
                created.append(entry)

    cpu = meter()
    elapsed = _run_threads([requests[index::threads] for index in range(threads)], send)
    if len(set(created)) != count:
        raise SystemExit(f"{count} publishes created {len(set(created))} distinct entries")
    return {
        "publishes": count,
        "per_second": round(count / elapsed, 1),
        **_percentiles(latencies),
        **cpu.per_publish_ms(count),
    }


def _publish_box(
    base: str, count: int, threads: int, meter: Callable[[], _CpuMeter]
) -> dict[str, float]:
    """Publish ``count`` manifests with the box's :class:`RegistryClient` (httpx)."""
    items = [(manifest, kos) for manifest, kos, _ in synthetic_entries(count, seed=_BOX_SEED)]
    latencies: list[float] = []
    created: list[str] = []
    with RegistryClient(base, timeout=30) as client:

        def send(part: list[tuple[ManifestSubmission, bytes]]) -> None:
            for manifest, kos in part:
                began = time.perf_counter()
                created.append(client.publish(manifest, kos))
                latencies.append(time.perf_counter() - began)

        cpu = meter()
        elapsed = _run_threads([items[index::threads] for index in range(threads)], send)
    if len(set(created)) != count:
        raise SystemExit(f"{count} publishes gave {len(set(created))} distinct entries")
    return {
        "publishes": count,
        "per_second": round(count / elapsed, 1),
        **_percentiles(latencies),
        **cpu.per_publish_ms(count),
    }


def _stored(store: RegistryStore) -> tuple[int, int]:
    """Return the number of stored entries and of stored KOS."""
    with store.engine.connect() as connection:
        return (
            connection.execute(select(func.count()).select_from(entries)).scalar_one(),
            connection.execute(select(func.count()).select_from(documents)).scalar_one(),
        )


def _patients(total: int, count: int) -> list[tuple[str, str]]:
    rng = random.Random(_SEARCH_SEED)
    population = max(1, total // ENTRIES_PER_PATIENT)
    return [synthetic_patient(rng.randrange(population)) for _ in range(count)]


def _timed(calls: list[Callable[[], int]]) -> dict[str, float]:
    samples, found = [], 0
    for call in calls[:50]:  # warm-up
        call()
    for call in calls:
        began = time.perf_counter()
        found += call()
        samples.append(time.perf_counter() - began)
    return {**_percentiles(samples), "mean_results": round(found / len(calls), 2)}


def _storage(store: RegistryStore, url: str, total: int) -> dict[str, float]:
    """Database size per entry; on PostgreSQL also each table with its indexes and TOAST."""
    with store.engine.connect() as connection:
        kos_bytes = connection.execute(select(func.avg(entries.c.content_size))).scalar_one()
        tables: dict[str, int] = {}
        if store.dialect == "postgresql":
            size = connection.execute(text("SELECT pg_database_size(current_database())")).scalar()
            for table in (entries.name, documents.name):
                tables[table] = int(
                    connection.execute(
                        text("SELECT pg_total_relation_size(CAST(:name AS regclass))"),
                        {"name": table},
                    ).scalar_one()
                )
        else:
            path = Path(url.removeprefix("sqlite:///"))
            with sqlite3.connect(path) as raw:  # outside any transaction: fold the WAL in
                raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    return {
        "database_bytes": int(size or 0),
        "bytes_per_entry": round(int(size or 0) / total, 1),
        "kos_bytes_per_entry": round(float(kos_bytes or 0), 1),
        **{f"{table}_bytes_per_entry": round(size / total, 1) for table, size in tables.items()},
    }


def _search_and_measure(
    store: RegistryStore,
    args: argparse.Namespace,
    base: str,
    fill: int,
    results: dict[str, object],
) -> None:
    """Search the patients of the bulk fill at the store level and over HTTP; storage size."""
    patients = _patients(fill, args.searches)
    current = (EntryStatus.CURRENT,)

    def in_store(patient: tuple[str, str]) -> int:
        query = EntryQuery(patient=patient, statuses=current, count=50)
        return len(store.search(query)[0])

    results["search_store"] = _timed([partial(in_store, p) for p in patients])
    with httpx.Client(base_url=base, timeout=30) as http:

        def over_http(patient: tuple[str, str]) -> int:
            response = http.get(
                "/DocumentReference",
                params={
                    "patient.identifier": f"urn:oid:{patient[0]}|{patient[1]}",
                    "status": "current",
                    "_count": "50",
                },
            )
            response.raise_for_status()
            return len(response.json().get("entry", []))

        results["search_http"] = _timed([partial(over_http, p) for p in patients])
    results["storage"] = _storage(store, args.url, int(str(results["entries"])))
    results["load_average_at_end"] = os.getloadavg()[0]
    results["cpu_count"] = os.cpu_count() or 0


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print its figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="SQLAlchemy URL of an EMPTY database")
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument(
        "--publish", type=int, default=20_000, help="publishes with the lean load generator"
    )
    parser.add_argument(
        "--publish-box", type=int, default=2000, help="publishes with the box's RegistryClient"
    )
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--searches", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=1, help="registry HTTP worker processes")
    parser.add_argument(
        "--load-batch", type=int, default=50_000, help="rows per bulk-load transaction"
    )
    parser.add_argument(
        "--prefilled",
        action="store_true",
        help="the database already holds the --entries synthetic entries (seed 0) of an "
        "earlier load: skip the publish and fill steps, search and measure",
    )
    parser.add_argument("--audit", type=Path, default=None, help="the server's audit trail")
    args = parser.parse_args(argv)

    store = RegistryStore(args.url)
    with store.engine.connect() as connection:
        stored = connection.execute(select(func.count()).select_from(entries)).scalar_one()
    if stored and not args.prefilled:
        raise SystemExit("the database is not empty: give a fresh one")
    results: dict[str, object] = {
        "dialect": store.dialect,
        "entries": stored if args.prefilled else args.entries,
        "workers": args.workers,
        "client_threads": args.threads,
        "audit_trail": args.audit is not None,
        "load_average_at_start": os.getloadavg()[0],
    }
    process, base = _start_server(args.url, args.workers, args.audit)
    try:
        if args.prefilled:
            _search_and_measure(store, args, base, args.entries, results)
            return
        database = _postmaster(store)
        meter = partial(_CpuMeter, process.pid, database)
        if args.publish:
            results["publish_http"] = _publish_lean(base, args.publish, args.threads, meter)
        if args.publish_box:
            results["publish_http_box_client"] = _publish_box(
                base, args.publish_box, args.threads, meter
            )
        published = args.publish + args.publish_box
        if _stored(store) != (published, published):
            raise SystemExit(f"{published} publishes answered but {_stored(store)} stored")
        results["publish_stored_entries"] = published
        began = time.perf_counter()
        fill = max(0, args.entries - published)
        load_synthetic_entries(
            store,
            fill,
            batch_size=args.load_batch,
            progress=lambda done: (
                print(f"loaded {done}", file=sys.stderr, flush=True)
                if done % 100_000 == 0
                else None
            ),
        )
        elapsed = time.perf_counter() - began
        results["bulk_load"] = {
            "rows": fill,
            "seconds": round(elapsed, 1),
            "per_second": round(fill / max(elapsed, 1e-9), 1),
        }
        began = time.perf_counter()
        with store.engine.begin() as connection:
            connection.exec_driver_sql("ANALYZE")
        results["analyze_s"] = round(time.perf_counter() - began, 1)
        _search_and_measure(store, args, base, fill, results)
    finally:
        process.terminate()
        process.wait(timeout=10)
        store.close()
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
