"""The ``drimbox`` command: help, refusals, serve/status/verify on a real data directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.fixtures.box import ServedBox

_DRIMBOX = str(Path(sys.executable).parent / "drimbox")


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_DRIMBOX, *args], capture_output=True, text=True, timeout=60, check=False, env=env
    )


def test_help_documents_every_serve_option() -> None:
    result = _run("serve", "--help")
    assert result.returncode == 0
    for option in (
        "--data-dir", "--aet", "--host", "--dimse-port", "--http-port", "--hl7-port",
        "--config", "--dimse-processes", "--public-url", "--registry-url",
    ):  # fmt: skip
        assert option in result.stdout, option
    assert "status" in _run("--help").stdout


def test_serve_refuses_a_non_loopback_interface_and_says_how_to_fix_it(tmp_path: Path) -> None:
    result = _run("serve", "--host", "0.0.0.0", "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert "refusing to listen" in result.stderr
    assert "127.0.0.1" in result.stderr


def test_serve_refuses_an_invalid_ae_title_from_the_environment(tmp_path: Path) -> None:
    env = {"DRIMBOX_AET": "THIS_AE_TITLE_IS_TOO_LONG", "PATH": "/usr/bin:/bin"}
    result = _run("serve", "--data-dir", str(tmp_path), env=env)
    assert result.returncode == 2
    assert "AE title" in result.stderr


def test_serve_reads_a_toml_config_file(tmp_path: Path) -> None:
    config = tmp_path / "drimbox.toml"
    config.write_text('host = "192.0.2.1"\n')
    result = _run("serve", "--config", str(config), "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert "192.0.2.1" in result.stderr


def test_serve_prints_what_listens_where_and_stops_cleanly_on_sigterm(
    served_box: ServedBox,
) -> None:
    assert served_box.stop(signal.SIGTERM) == 0
    log = served_box.log_text()
    assert f"127.0.0.1:{served_box.dimse_port}" in log
    assert f"http://127.0.0.1:{served_box.http_port}/dicom-web" in log
    assert f"127.0.0.1:{served_box.hl7_port}" in log
    assert "stopped." in log


def test_serve_stops_cleanly_on_sigint(served_box: ServedBox) -> None:
    assert served_box.stop(signal.SIGINT) == 0


def test_a_second_serve_on_the_same_data_dir_is_refused(served_box: ServedBox) -> None:
    result = _run("serve", "--data-dir", str(served_box.data_dir), "--dimse-port", "0",
                  "--http-port", "0")  # fmt: skip
    assert result.returncode == 1
    assert "already serving" in result.stderr


def test_status_and_verify_on_an_empty_box(tmp_path: Path) -> None:
    status = _run("status", "--json", "--data-dir", str(tmp_path))
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout) == {
        "patients": 0, "studies": 0, "series": 0, "instances": 0, "stored_bytes": 0,
        "publications": {}, "outbox_pending": 0, "attention": [],
    }  # fmt: skip
    verify = _run("verify", "--json", "--data-dir", str(tmp_path))
    assert verify.returncode == 0, verify.stderr
    assert json.loads(verify.stdout)["consistent"] is True


def test_verify_reports_and_repairs_an_orphan_blob(tmp_path: Path) -> None:
    from drimbox.bootstrap import build_adapters
    from tests.fixtures.box import default_settings

    blobs, index, _ = build_adapters(default_settings(data_dir=tmp_path))
    blobs.put([b"bytes written before a crash, never indexed"])
    index.close()
    blobs.close()
    report = _run("verify", "--json", "--grace", "0", "--data-dir", str(tmp_path))
    assert report.returncode == 1
    assert json.loads(report.stdout)["orphans"] == 1
    repaired = _run("verify", "--repair", "--grace", "0", "--data-dir", str(tmp_path))
    assert repaired.returncode == 0, repaired.stdout
    assert _run("verify", "--data-dir", str(tmp_path)).returncode == 0


def test_verify_repair_removes_what_interrupted_puts_left_long_ago(tmp_path: Path) -> None:
    from drimbox.bootstrap import build_adapters
    from drimbox.storage.filesystem import TEMPORARY_SUFFIX
    from tests.fixtures.box import default_settings

    blobs, index, _ = build_adapters(default_settings(data_dir=tmp_path))
    index.close()
    blobs.close()
    temporary = tmp_path / "blobs" / "tmp"
    stale, recent = temporary / f"{'a' * 32}{TEMPORARY_SUFFIX}", temporary / f"{'b' * 32}.tmp"
    stale.write_bytes(b"part of a put interrupted by a crash")
    recent.write_bytes(b"a put in progress")
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))

    checked = _run("verify", "--json", "--data-dir", str(tmp_path))
    assert json.loads(checked.stdout)["temporary_removed"] == 0
    assert stale.exists()
    repaired = _run("verify", "--repair", "--json", "--grace", "0", "--data-dir", str(tmp_path))
    assert repaired.returncode == 0, repaired.stderr
    assert json.loads(repaired.stdout)["temporary_removed"] == 1
    assert not stale.exists()
    assert recent.exists()


def test_read_only_commands_refuse_a_missing_data_dir(tmp_path: Path) -> None:
    for command in ("status", "verify", "publications"):
        result = _run(command, "--data-dir", str(tmp_path / "missing"))
        assert result.returncode == 2, command
        assert "does not exist" in result.stderr
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "missing").exists()
