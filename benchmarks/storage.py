"""Put throughput of the blob stores: 512 KiB objects, durable (fsync'ed / completed PUT).

Run it in a private network namespace (it starts its own SeaweedFS on free loopback ports)::

    bash tools/in-netns.sh .venv/bin/python -m benchmarks.storage --objects 200 --threads 1 4

The loop is bounded (``--objects`` puts per store and thread count); objects are deleted after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from drimbox.ports import BlobStore
from drimbox.storage import FilesystemBlobStore
from drimbox.storage.s3 import S3BlobStore
from tests.fixtures.seaweedfs import SeaweedFS

OBJECT_SIZE = 512 * 1024
"""About one CT image (512 x 512, 16 bits allocated) as a Part 10 file."""
CHUNK_SIZE = 64 * 1024
MIB = 1024 * 1024


def chunks(seed: int) -> Iterator[bytes]:
    """One object's content, as a receiver would hand it over (64 KiB chunks)."""
    block = os.urandom(16) * (CHUNK_SIZE // 16)
    for start in range(0, OBJECT_SIZE, CHUNK_SIZE):
        yield block[: min(CHUNK_SIZE, OBJECT_SIZE - start)]


def measure(store: BlobStore, objects: int, threads: int) -> dict[str, float]:
    """Put ``objects`` objects from ``threads`` threads; return throughput and latencies."""
    latencies: list[float] = []
    keys: list[str] = []
    lock = threading.Lock()
    per_thread = objects // threads

    def worker() -> None:
        for seed in range(per_thread):
            started = time.perf_counter()
            key = store.put(chunks(seed)).key
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)
                keys.append(key)

    store.put(chunks(0))  # warm-up: directories, bucket volumes, connections
    workers = [threading.Thread(target=worker) for _ in range(threads)]
    started = time.perf_counter()
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    wall = time.perf_counter() - started
    for key in keys:
        store.delete(key)
    latencies.sort()
    return {
        "objects_per_s": len(latencies) / wall,
        "mib_per_s": len(latencies) * OBJECT_SIZE / MIB / wall,
        "median_ms": statistics.median(latencies) * 1000,
        "p95_ms": latencies[int(0.95 * (len(latencies) - 1))] * 1000,
    }


def main() -> None:
    """Measure the filesystem and SeaweedFS S3 stores and print one line per configuration."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=200, help="puts per measurement")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--directory", type=Path, default=None, help="filesystem store parent")
    arguments = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=arguments.directory) as work:
        server = SeaweedFS(base_dir=Path(work) / "seaweedfs")
        server.start()
        try:
            factories: dict[str, Callable[[], BlobStore]] = {
                "filesystem": lambda: FilesystemBlobStore(Path(work) / "blobs"),
                "s3-seaweedfs": lambda: S3BlobStore(
                    server.endpoint,
                    server.access_key,
                    server.secret_key,
                    "benchmark",
                    secure=False,
                    region=server.region,
                ),
            }
            print(f"put of {OBJECT_SIZE // 1024} KiB objects, {arguments.objects} per run")
            for name, factory in factories.items():
                store = factory()
                for threads in arguments.threads:
                    result = measure(store, arguments.objects, threads)
                    print(
                        f"{name:<13} threads={threads}  {result['objects_per_s']:7.1f} obj/s  "
                        f"{result['mib_per_s']:6.1f} MiB/s  median {result['median_ms']:6.2f} ms  "
                        f"p95 {result['p95_ms']:6.2f} ms"
                    )
                store.close()
        finally:
            server.stop()


if __name__ == "__main__":
    main()
