"""Settings are read once, validated, and unsafe values fail fast."""

from __future__ import annotations

from pathlib import Path

import pytest

from drimbox.config import Peer, load_settings
from drimbox.errors import ConfigurationError


def test_defaults_are_the_embedded_loopback_box() -> None:
    settings = load_settings(environ={})
    assert settings.host == "127.0.0.1"
    assert (settings.dimse_port, settings.http_port, settings.hl7_port) == (11112, 8080, 2575)
    assert settings.aet == "DRIMBOX"
    assert settings.storage_backend == "filesystem"
    assert settings.resolved_index_url.startswith("sqlite:///")
    assert settings.resolved_public_url == "http://127.0.0.1:8080/dicom-web"


def test_file_then_environment_then_overrides(tmp_path: Path) -> None:
    config = tmp_path / "drimbox.toml"
    config.write_text(
        'aet = "FROMFILE"\nhttp_port = 9000\n[storage]\nbackend = "filesystem"\n'
        '[index]\nurl = "sqlite:///x.db"\n'
        '[[peers]]\naet = "PACS"\nhost = "127.0.0.1"\nport = 4242\n'
    )
    settings = load_settings(
        config, overrides={"http_port": 9001, "aet": None}, environ={"DRIMBOX_AET": "FROMENV"}
    )
    assert settings.aet == "FROMENV"
    assert settings.http_port == 9001
    assert settings.index_url == "sqlite:///x.db"
    assert settings.peers == (Peer("PACS", "127.0.0.1", 4242),)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"host": "0.0.0.0"}, "refusing to listen"),
        ({"aet": "A" * 17}, "AE title"),
        ({"aet": "BAD\\AE"}, "AE title"),
        ({"dimse_port": 70000}, "dimse_port"),
        ({"production": True}, "production mode"),
        ({"storage_backend": "s3"}, "s3_endpoint"),
        ({"storage_backend": "tape"}, "unknown"),
        ({"colour": "blue"}, "unknown setting"),
    ],
)
def test_unsafe_or_invalid_settings_are_refused(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        load_settings(overrides=overrides, environ={})


def test_peers_from_environment() -> None:
    settings = load_settings(environ={"DRIMBOX_PEERS": "PACS@127.0.0.1:4242, WS@::1:104"})
    assert settings.peers == (Peer("PACS", "127.0.0.1", 4242), Peer("WS", "::1", 104))
    with pytest.raises(ConfigurationError, match="AET@host:port"):
        load_settings(environ={"DRIMBOX_PEERS": "nonsense"})


def test_unreadable_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_settings(tmp_path / "missing.toml", environ={})
    bad = tmp_path / "bad.toml"
    bad.write_text("aet = ")
    with pytest.raises(ConfigurationError, match="not valid TOML"):
        load_settings(bad, environ={})
