"""Streaming: a ~2 GiB study is retrieved with the server's resident memory growing < 100 MiB."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydicom.uid import UID

from drimbox.dicom.synthetic import SyntheticStudy, make_instance
from tests.dicomweb.conftest import _free_port, build_app, part10_bytes

ROWS = COLUMNS = 2048  # 8 MiB of 16-bit pixels per instance
INSTANCES = 256  # 2 GiB
MAX_GROWTH_KIB = 100 * 1024
STUDY = SyntheticStudy(seed="stream-2gib", rows=8, columns=8)
_UID_BASE = 1_000_000


def instance_uid(number: int) -> str:
    return f"1.2.826.0.1.3680043.10.1337.77.{_UID_BASE + number}"  # same length for all


def write_study(root: Path) -> None:
    """Index the same pixel payload under INSTANCES SOP Instance UIDs (fast: bytes replace)."""
    dataset = make_instance(STUDY, 0, 0)
    template_uid = instance_uid(0)
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = UID(template_uid)
    dataset.Rows, dataset.Columns = ROWS, COLUMNS
    dataset.PixelData = bytes(ROWS * COLUMNS * 2)
    template = part10_bytes(dataset)
    box = build_app(root)
    try:
        for number in range(INSTANCES):
            data = template.replace(template_uid.encode(), instance_uid(number).encode())
            box.ingest.store_part10(io.BytesIO(data), source="test")
    finally:
        box.index.close()
        box.blobs.close()


def memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


@pytest.fixture
def big_study(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "big"
    try:
        write_study(root)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_two_gib_study_streams_with_bounded_server_memory(big_study: Path) -> None:
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.dicomweb._serve", str(big_study), str(port)],
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        url = f"http://127.0.0.1:{port}/dicom-web"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/studies", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "server did not start"
                assert server.poll() is None, "server exited"
                time.sleep(0.1)
        # warm up every code path once (small series), then take the baseline
        httpx.get(f"{url}/studies/{STUDY.study_instance_uid}/series/"
                  f"{STUDY.series_instance_uid(0)}/instances/{instance_uid(1)}")  # fmt: skip
        baseline = memory_kib(server.pid, "VmRSS")
        received = 0
        with httpx.stream(
            "GET", f"{url}/studies/{STUDY.study_instance_uid}", timeout=60
        ) as response:
            assert response.status_code == 200
            for chunk in response.iter_raw(1 << 20):
                received += len(chunk)
        peak = memory_kib(server.pid, "VmHWM")
        assert received > INSTANCES * ROWS * COLUMNS * 2
        print(f"streamed {received >> 20} MiB; server RSS growth {(peak - baseline) >> 10} MiB")
        assert peak - baseline < MAX_GROWTH_KIB, (baseline, peak)
    finally:
        server.terminate()
        server.wait(timeout=10)
