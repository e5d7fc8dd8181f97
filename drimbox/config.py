"""Settings: read once (TOML file, then ``DRIMBOX_*`` environment, then explicit overrides),
validated, frozen, and passed explicitly. Unsafe values fail fast with a message saying how to fix
them.

File layout (every key optional)::

    data_dir = "./drimbox-data"
    aet = "DRIMBOX"
    host = "127.0.0.1"
    dimse_port = 11112
    http_port = 8080
    hl7_port = 2575

    [storage]              # -> storage_backend, s3_* settings
    backend = "filesystem" # or "s3"
    s3_endpoint = "127.0.0.1:8333"
    ...

    [index]
    url = "postgresql+psycopg://user@127.0.0.1:5432/drimbox"   # -> index_url

    [[peers]]              # DIMSE peers allowed to associate (and C-MOVE destinations)
    aet = "PACS"
    host = "127.0.0.1"
    port = 4242

Environment variables use the flattened name: ``DRIMBOX_AET``, ``DRIMBOX_STORAGE_BACKEND``,
``DRIMBOX_INDEX_URL``, ``DRIMBOX_PEERS="PACS@127.0.0.1:4242,WS@127.0.0.1:104"``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drimbox.errors import ConfigurationError

__all__ = [
    "MAX_AUTO_DIMSE_PROCESSES",
    "Peer",
    "Settings",
    "is_loopback",
    "load_settings",
    "resolved_dimse_processes",
]

_ENV_PREFIX = "DRIMBOX_"
_MAX_AE_TITLE_LENGTH = 16  # PS3.5 §6.2, VR AE
_SECTIONS = {"storage": "", "index": "index_", "dimse": "", "hl7": "", "http": ""}


@dataclass(frozen=True, slots=True)
class Peer:
    """A DICOM application entity the box talks to.

    Attributes
    ----------
    aet
        Its AE title.
    host
        Its IP address or host name.
    port
        Its DIMSE port (used when the box is the SCU, e.g. C-MOVE destinations).
    """

    aet: str
    host: str
    port: int = 104


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting of a box.

    Attributes
    ----------
    data_dir
        Directory holding the embedded index, blobs and queues.
    aet
        The box's AE title.
    host
        Address every listener binds to.
    dimse_port, http_port, hl7_port
        Listening ports (0 picks a free port, for tests).
    dimse_processes
        Number of DIMSE receiver processes sharing the listening port (``SO_REUSEPORT``).
    dimse_cpu_affinity
        Pin each DIMSE process's association and sync threads to one CPU, process *i* to the
        *i*-th CPU the box may use (:mod:`drimbox.affinity`); other threads use every CPU.
    peers
        DIMSE peers allowed to associate. Empty in the loopback-only development default means
        "any calling AE from a loopback address".
    storage_backend
        ``"filesystem"`` (default, under ``data_dir``) or ``"s3"``.
    s3_endpoint, s3_bucket, s3_access_key, s3_secret_key, s3_secure, s3_region
        S3 server settings when ``storage_backend == "s3"``.
    index_url
        SQLAlchemy URL of the index; default a SQLite file under ``data_dir``.
    max_instance_bytes
        Largest instance accepted (C-STORE and STOW-RS).
    stability_seconds
        Quiet period after which a study with no new instance is stable.
    public_url
        Base URL of this box's DICOMweb as remote boxes see it (RetrieveURL in manifests).
    registry_url
        FHIR base of the national registry; ``None`` means the embedded registry.
    production
        Production mode: refuses to start without TLS, an identity provider and real secrets.
    organization_uid_root
        UID root of the organisation, under which manifest UIDs are derived. Empty: a
        ``2.25`` UUID-derived root is generated once and kept in the data directory.
    institution_name
        Institution named in manifests when the report names none.
    source_box_id
        This box's identifier in the registry (default: its AE title).
    pacs_aet
        AE title of the peer that is the site's PACS (studies missing when a report arrives are
        fetched from it with C-FIND + C-MOVE); empty: none.
    images_timeout_seconds
        How long a report may wait for its study's images.
    publish_base_delay, publish_max_delay
        Bounds in seconds of the outbox publisher's exponential backoff while the registry is
        unavailable (first retry delay, largest delay).
    """

    data_dir: Path = Path("drimbox-data")
    aet: str = "DRIMBOX"
    host: str = "127.0.0.1"
    dimse_port: int = 11112
    http_port: int = 8080
    hl7_port: int = 2575
    dimse_processes: int = 0
    dimse_cpu_affinity: bool = True
    peers: tuple[Peer, ...] = ()
    storage_backend: str = "filesystem"
    s3_endpoint: str = ""
    s3_bucket: str = "drimbox"
    s3_access_key: str = ""
    s3_secret_key: str = field(default="", repr=False)
    s3_secure: bool = True
    s3_region: str = "us-east-1"
    index_url: str = ""
    max_instance_bytes: int = 2 * 1024**3
    stability_seconds: float = 10.0
    public_url: str = ""
    registry_url: str | None = None
    production: bool = False
    organization_uid_root: str = ""
    institution_name: str = "drimbox"
    source_box_id: str = ""
    pacs_aet: str = ""
    images_timeout_seconds: float = 3600.0
    publish_base_delay: float = 1.0
    publish_max_delay: float = 300.0

    @property
    def resolved_index_url(self) -> str:
        """The index URL, defaulting to a SQLite file in the data directory."""
        if self.index_url:
            return self.index_url
        return f"sqlite:///{(self.data_dir / 'index.sqlite3').resolve()}"

    @property
    def resolved_public_url(self) -> str:
        """This box's public DICOMweb base, defaulting to the local HTTP listener."""
        if self.public_url:
            return self.public_url.rstrip("/")
        return f"http://127.0.0.1:{self.http_port}/dicom-web"

    @property
    def loopback_only(self) -> bool:
        """Whether every listener binds a loopback address."""
        return is_loopback(self.host)

    def validate(self) -> Settings:
        """Check the settings and return them; raise on any unsafe or invalid value.

        Raises
        ------
        ConfigurationError
            With a message naming the setting and how to fix it.
        """
        _check_ae_title(self.aet, "aet")
        for peer in self.peers:
            _check_ae_title(peer.aet, "peers.aet")
            _check_port(peer.port, f"port of peer {peer.aet!r}", allow_zero=False)
        for name in ("dimse_port", "http_port", "hl7_port"):
            _check_port(getattr(self, name), name, allow_zero=True)
        if not self.loopback_only:
            raise ConfigurationError(
                f"refusing to listen on {self.host!r}: authentication is not available yet, so "
                'the box only listens on a loopback address; set host = "127.0.0.1" (or put an '
                "authenticating reverse proxy in front of a loopback box)"
            )
        if self.production:
            raise ConfigurationError(
                "production mode needs TLS and an OpenID Connect identity provider, which are not "
                "configured; remove production = true (development mode listens on loopback only)"
            )
        if self.dimse_processes < 0 or self.dimse_processes > 64:
            raise ConfigurationError(
                "dimse_processes must be between 1 and 64 (0: one per CPU core, at most "
                f"{MAX_AUTO_DIMSE_PROCESSES})"
            )
        if self.storage_backend not in ("filesystem", "s3"):
            raise ConfigurationError(
                f'storage backend {self.storage_backend!r} is unknown: use "filesystem" or "s3"'
            )
        if self.storage_backend == "s3":
            missing = [
                name
                for name in ("s3_endpoint", "s3_bucket", "s3_access_key", "s3_secret_key")
                if not getattr(self, name)
            ]
            if missing:
                raise ConfigurationError(
                    f'storage backend "s3" needs {", ".join(missing)}: set them in the [storage] '
                    "section or as DRIMBOX_S3_* environment variables"
                )
        if self.max_instance_bytes <= 0:
            raise ConfigurationError("max_instance_bytes must be positive")
        if self.stability_seconds < 0:
            raise ConfigurationError("stability_seconds must not be negative")
        if self.images_timeout_seconds <= 0:
            raise ConfigurationError("images_timeout_seconds must be positive")
        if not 0 < self.publish_base_delay <= self.publish_max_delay:
            raise ConfigurationError(
                "publish_base_delay must be positive and at most publish_max_delay"
            )
        if self.organization_uid_root and not _is_uid_root(self.organization_uid_root):
            raise ConfigurationError(
                f"organization_uid_root {self.organization_uid_root!r} is not a UID root of at "
                f"most {_MAX_UID_ROOT_LENGTH} characters (digits and dots, PS3.5 §9.1)"
            )
        if self.pacs_aet and self.pacs_aet not in {peer.aet for peer in self.peers}:
            raise ConfigurationError(
                f"pacs_aet {self.pacs_aet!r} is not a configured peer: add it to [[peers]] with "
                "its host and port"
            )
        return self


def load_settings(
    config_file: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read settings once: file, then environment, then explicit overrides; validate them.

    Parameters
    ----------
    config_file
        A TOML file, or ``None`` (``DRIMBOX_CONFIG`` is used when set).
    overrides
        Values given explicitly (e.g. CLI options); ``None`` values are ignored.
    environ
        The environment to read (default ``os.environ``).

    Returns
    -------
    Settings
        Frozen and validated.

    Raises
    ------
    ConfigurationError
        On an unreadable file, an unknown key, a badly typed value or an unsafe setting.
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    path = config_file or (Path(env["DRIMBOX_CONFIG"]) if env.get("DRIMBOX_CONFIG") else None)
    if path is not None:
        values.update(_read_toml(path))
    values.update(_read_environment(env))
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return _build(values).validate()


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}

MAX_AUTO_DIMSE_PROCESSES = 4
"""Most DIMSE processes started by default (``dimse_processes = 0``)."""


def resolved_dimse_processes(settings: Settings) -> int:
    """The number of DIMSE receiver processes to run: the setting, or one per CPU core.

    Each process has its own interpreter (no shared GIL), so parallel associations are
    received in parallel; the operating system's CPU affinity of the box is respected.
    """
    if settings.dimse_processes:
        return settings.dimse_processes
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_AUTO_DIMSE_PROCESSES))


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigurationError(
            f"cannot read configuration file {path}: {error.strerror}"
        ) from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigurationError(f"configuration file {path} is not valid TOML: {error}") from error
    values: dict[str, Any] = {}
    for key, value in document.items():
        if key == "peers":
            values["peers"] = value
        elif key in _SECTIONS and isinstance(value, dict):
            for sub_key, sub_value in value.items():
                values[_section_key(key, sub_key)] = sub_value
        else:
            values[key] = value
    return values


def _section_key(section: str, key: str) -> str:
    if section == "storage" and key == "backend":
        return "storage_backend"
    if section == "index" and key == "url":
        return "index_url"
    return key


def _read_environment(env: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, raw in env.items():
        if not name.startswith(_ENV_PREFIX) or name == "DRIMBOX_CONFIG":
            continue
        key = name[len(_ENV_PREFIX) :].lower()
        if key not in _FIELDS:
            continue
        values[key] = _parse_peers(raw) if key == "peers" else raw
    return values


def _parse_peers(raw: str) -> list[dict[str, Any]]:
    peers = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        aet, _, address = item.partition("@")
        host, _, port = address.rpartition(":")
        if not aet or not host or not port.isdigit():
            raise ConfigurationError(
                f"peer {item!r} is not of the form AET@host:port (DRIMBOX_PEERS)"
            )
        peers.append({"aet": aet, "host": host, "port": int(port)})
    return peers


def _build(values: Mapping[str, Any]) -> Settings:
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in _FIELDS:
            raise ConfigurationError(
                f"unknown setting {key!r}; known settings: {', '.join(sorted(_FIELDS))}"
            )
        kwargs[key] = _coerce(key, value)
    return Settings(**kwargs)


def _coerce(key: str, value: Any) -> Any:
    default = _FIELDS[key].default
    try:
        if key == "peers":
            return tuple(
                Peer(aet=str(p["aet"]), host=str(p["host"]), port=int(p.get("port", 104)))
                for p in value
            )
        if key == "data_dir":
            return Path(value)
        if key == "registry_url":
            return str(value) if value else None
        if isinstance(default, bool):
            return _to_bool(value)
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
        return str(value)
    except (TypeError, ValueError, KeyError) as error:
        raise ConfigurationError(f"setting {key!r} has an invalid value {value!r}") from error


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(value)


_MAX_UID_ROOT_LENGTH = 40
"""Manifest UIDs are derived under the root with a suffix; 64 characters in all (PS3.5 §9.1)."""


def _is_uid_root(root: str) -> bool:
    parts = root.split(".")
    return len(root) <= _MAX_UID_ROOT_LENGTH and all(
        part.isdigit() and (part == "0" or not part.startswith("0")) for part in parts
    )


def _check_ae_title(aet: str, name: str) -> None:
    stripped = aet.strip(" ")
    if (
        not stripped
        or len(aet) > _MAX_AE_TITLE_LENGTH
        or "\\" in aet
        or any(ord(c) < 0x20 or ord(c) > 0x7E for c in aet)
    ):
        raise ConfigurationError(
            f"AE title {aet!r} ({name}) is not valid: use 1 to 16 printable ASCII characters "
            "without backslash (PS3.5 §6.2, VR AE)"
        )


def _check_port(port: int, name: str, *, allow_zero: bool) -> None:
    low = 0 if allow_zero else 1
    if not low <= port <= 65535:
        raise ConfigurationError(f"{name} must be a TCP port between {low} and 65535, not {port}")


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (or ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
