"""Durability: ``kill -9`` of ``drimbox serve`` while instances stream in loses no acknowledged
instance.

Each round starts the box, streams instances with pynetdicom (so we know exactly which got a
0x0000 Success), and kills the box with SIGKILL at a random moment (deterministic seed). After
the last round, every acknowledged instance must be in the index with its bytes intact in the
blob store, and ``drimbox verify --repair`` then ``drimbox verify`` must exit 0.
"""

from __future__ import annotations

import random
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import dcmread
from pynetdicom import AE, _config

from drimbox.config import load_settings
from drimbox.dicom.synthetic import SyntheticStudy, write_study
from tests.dimse._support import data_set_bytes, stored_data_set_bytes
from tests.fixtures.box import ServedBox

ROUNDS = 10
SEED = 20260101
KILL_AFTER_SECONDS = (0.05, 0.6)
POOL = 240
NETWORK_TIMEOUT_SECONDS = 5


class _Sender(threading.Thread):
    """Streams files over one association, from ``start``, until told to stop or cut off."""

    def __init__(self, port: int, files: list[Path], start: int, aet: str) -> None:
        super().__init__(daemon=True)
        self._port, self._files, self._start, self._aet = port, files, start, aet
        self.acknowledged: list[Path] = []
        self.sent = 0
        self.stop = threading.Event()

    def run(self) -> None:
        ae = AE(ae_title="DURABILITY")
        ae.add_requested_context(str(dcmread(self._files[0]).SOPClassUID), "1.2.840.10008.1.2.1")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = NETWORK_TIMEOUT_SECONDS
        association = ae.associate("127.0.0.1", self._port, ae_title=self._aet)
        # pynetdicom skips close() when shutdown() fails (peer already gone): keep a reference
        # and close the socket ourselves, or it leaks (ResourceWarning).
        raw_socket = association.dul.socket.socket if association.dul.socket else None
        try:
            position = self._start
            while not self.stop.is_set() and association.is_established:
                path = self._files[position % len(self._files)]
                response = association.send_c_store(path)
                self.sent += 1
                if "Status" in response and response.Status == 0x0000:
                    self.acknowledged.append(path)
                position += 1
            if association.is_established:
                association.release()
        finally:
            if raw_socket is not None:
                raw_socket.close()


def _uid(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


@pytest.mark.integration
def test_instances_acknowledged_before_a_kill_9_survive_it_byte_identical(
    served_box_factory: Callable[..., ServedBox], tmp_path: Path
) -> None:
    _config.STORE_SEND_CHUNKED_DATASET = True  # raw file bytes; restored by the autouse fixture
    files = write_study(SyntheticStudy(seed="durability", instances_per_series=POOL), tmp_path)
    rng = random.Random(SEED)
    box = served_box_factory()
    acknowledged: dict[str, Path] = {}
    next_file = 0

    for _ in range(ROUNDS):
        box.start()
        sender = _Sender(box.dimse_port, files, next_file, box.aet)
        sender.start()
        time.sleep(rng.uniform(*KILL_AFTER_SECONDS))
        box.kill()
        sender.stop.set()
        sender.join(timeout=3 * NETWORK_TIMEOUT_SECONDS)
        assert not sender.is_alive()
        acknowledged.update((_uid(path), path) for path in sender.acknowledged)
        next_file += sender.sent

    assert len(acknowledged) >= ROUNDS, "too few instances acknowledged to test anything"
    box.start()  # recovery on restart, then a clean stop
    assert box.stop() == 0, box.log_text()

    from drimbox.bootstrap import build_adapters

    settings = load_settings(overrides={"data_dir": box.data_dir}, environ={})
    blobs, index, _ = build_adapters(settings)
    try:
        for uid, path in acknowledged.items():
            location = index.get_instance(uid)
            assert location is not None, f"acknowledged instance {uid} was lost"
            assert stored_data_set_bytes(blobs, location.blob.key) == data_set_bytes(path)
    finally:
        index.close()
        blobs.close()

    repair = subprocess.run(
        box.command("verify", "--repair", "--grace", "0"), capture_output=True, text=True
    )
    assert repair.returncode == 0, repair.stdout + repair.stderr
    check = subprocess.run(box.command("verify"), capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
