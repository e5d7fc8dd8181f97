"""The ``drimbox`` command (typer).

Every option of ``serve`` can also be set in a TOML file (``--config``) or as a ``DRIMBOX_*``
environment variable; see :mod:`drimbox.config`.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from drimbox.config import Settings, is_loopback, load_settings
from drimbox.errors import ConfigurationError, DrimboxError
from drimbox.model import ExamState, JobState

__all__ = ["app"]

app = typer.Typer(
    help="drimbox: a DRIMbox imaging gateway (DICOM, DICOMweb, national registry).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
registry_app = typer.Typer(help="The reference national registry (IHE MHD / FHIR R4).")
app.add_typer(registry_app, name="registry")

_console = Console(stderr=True, soft_wrap=True)
_NEEDS_ATTENTION = frozenset(
    {ExamState.QUARANTINED, ExamState.REJECTED, ExamState.IMAGES_TIMED_OUT}
)
"""Exam states a person must look at (listed by ``drimbox status``)."""

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="TOML settings file (also DRIMBOX_CONFIG).", exists=True),
]
DataDirOption = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Data directory (default ./drimbox-data; DRIMBOX_DATA_DIR)."),
]


def _settings(config: Path | None, **overrides: Any) -> Settings:
    try:
        return load_settings(config, overrides=overrides)
    except ConfigurationError as error:
        _console.print(f"[bold red]configuration error:[/] {error}")
        raise typer.Exit(code=2) from error


@app.command()
def serve(
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    aet: Annotated[
        str | None, typer.Option(help="AE title of the box (default DRIMBOX; DRIMBOX_AET).")
    ] = None,
    host: Annotated[
        str | None,
        typer.Option(help="Address to listen on (default 127.0.0.1; loopback only for now)."),
    ] = None,
    dimse_port: Annotated[
        int | None, typer.Option(help="DIMSE port (default 11112; DRIMBOX_DIMSE_PORT).")
    ] = None,
    http_port: Annotated[
        int | None, typer.Option(help="HTTP port (default 8080; DRIMBOX_HTTP_PORT).")
    ] = None,
    hl7_port: Annotated[
        int | None, typer.Option(help="HL7 MLLP port (default 2575; DRIMBOX_HL7_PORT).")
    ] = None,
    dimse_processes: Annotated[
        int | None,
        typer.Option(
            help="DIMSE receiver processes sharing the port (default: one per CPU core, at most 4)."
        ),
    ] = None,
    dimse_cpu_affinity: Annotated[
        bool | None,
        typer.Option(
            "--dimse-cpu-affinity/--no-dimse-cpu-affinity",
            help="Run each DIMSE process's association and sync threads on one CPU of their "
            "own (default on; DRIMBOX_DIMSE_CPU_AFFINITY).",
        ),
    ] = None,
    public_url: Annotated[
        str | None,
        typer.Option(help="Public DICOMweb base used in manifests' RetrieveURLs."),
    ] = None,
    registry_url: Annotated[
        str | None,
        typer.Option(help="FHIR base of the national registry (default: the embedded one)."),
    ] = None,
) -> None:
    """Run the box: DIMSE, DICOMweb and the embedded registry, until SIGINT/SIGTERM."""
    settings = _settings(
        config,
        data_dir=data_dir,
        aet=aet,
        host=host,
        dimse_port=dimse_port,
        http_port=http_port,
        hl7_port=hl7_port,
        dimse_processes=dimse_processes,
        dimse_cpu_affinity=dimse_cpu_affinity,
        public_url=public_url,
        registry_url=registry_url,
    )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    lock = _lock_data_dir(settings.data_dir)
    from drimbox.bootstrap import build_box  # heavy imports only when serving

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        box = build_box(settings)
        box.start()
    except (DrimboxError, OSError) as error:
        _console.print(f"[bold red]cannot start:[/] {error}")
        raise typer.Exit(code=1) from error
    _print_banner(box.settings)
    try:
        # A timed wait: a signal delivered to another thread only sets a flag that the main
        # thread checks when it wakes, and an untimed lock wait may never wake.
        while not stop.wait(0.5):
            pass
    finally:
        _console.print("stopping...")
        box.stop()
        os.close(lock)
        _console.print("stopped.")


def _existing_box(config: Path | None, data_dir: Path | None) -> Settings:
    """Settings of a box whose data directory must already exist (read-only commands)."""
    settings = _settings(config, data_dir=data_dir)
    if not settings.data_dir.is_dir():
        _console.print(
            f"[bold red]no box here:[/] {settings.data_dir} does not exist; give the --data-dir "
            "of a box (the directory `drimbox serve` uses)"
        )
        raise typer.Exit(code=2)
    return settings


def _lock_data_dir(data_dir: Path) -> int:
    fd = os.open(data_dir / "serve.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as error:
        os.close(fd)
        _console.print(
            f"[bold red]cannot start:[/] another drimbox is already serving {data_dir}; "
            "stop it or choose another --data-dir"
        )
        raise typer.Exit(code=1) from error
    return fd


def _print_banner(settings: Settings) -> None:
    table = Table(title=f"drimbox {settings.aet} is running", show_header=True)
    table.add_column("service")
    table.add_column("listens on")
    host = settings.host
    processes = settings.dimse_processes
    table.add_row(
        "DIMSE (C-ECHO, C-STORE)",
        f"{host}:{settings.dimse_port}  AE {settings.aet}  "
        f"({processes} process{'es' if processes > 1 else ''})",
    )
    table.add_row("DICOMweb", f"http://{host}:{settings.http_port}/dicom-web")
    table.add_row("HL7 v2 MLLP (ORU/MDM reports)", f"{host}:{settings.hl7_port}")
    if settings.registry_url is None:
        table.add_row("registry (embedded, FHIR)", f"http://{host}:{settings.http_port}/registry")
    else:
        table.add_row("registry (remote)", settings.registry_url)
    table.add_row("health", f"http://{host}:{settings.http_port}/health/ready")
    table.add_row("data", str(settings.data_dir.resolve()))
    table.add_row("index", settings.resolved_index_url.split("@")[-1])
    table.add_row("storage", settings.storage_backend)
    _console.print(table)
    _console.print("Press Ctrl+C to stop.")


@app.command()
def status(
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show what the box holds: patients, studies, series, instances, bytes stored."""
    settings = _existing_box(config, data_dir)
    from drimbox.bootstrap import build_adapters
    from drimbox.index.publications import open_publication_store

    blobs, index, _ = build_adapters(settings)
    publications = open_publication_store(settings.resolved_index_url)
    try:
        stats = index.statistics()
        exams = publications.exams()
        pending_jobs = sum(1 for job in publications.jobs() if job.state is JobState.PENDING)
    finally:
        publications.close()
        index.close()
        blobs.close()
    states: dict[str, int] = {}
    for exam in exams:
        states[exam.state.value] = states.get(exam.state.value, 0) + 1
    quarantined = [
        {"study_instance_uid": exam.study_instance_uid, "reason": exam.reason}
        for exam in exams
        if exam.state in _NEEDS_ATTENTION
    ]
    payload: dict[str, Any] = {
        "patients": stats.patients,
        "studies": stats.studies,
        "series": stats.series,
        "instances": stats.instances,
        "stored_bytes": stats.stored_bytes,
        "publications": states,
        "outbox_pending": pending_jobs,
        "attention": quarantined,
    }
    if as_json:
        typer.echo(json.dumps(payload))
        return
    table = Table(title="drimbox status")
    table.add_column("what")
    table.add_column("count", justify="right")
    for name in ("patients", "studies", "series", "instances", "stored_bytes"):
        table.add_row(name.replace("_", " "), f"{payload[name]:,}")
    for state, count in sorted(states.items()):
        table.add_row(f"exams {state}", f"{count:,}")
    table.add_row("outbox jobs pending", f"{pending_jobs:,}")
    out = Console()
    out.print(table)
    for item in quarantined:
        out.print(f"[yellow]needs attention[/] {item['study_instance_uid']}: {item['reason']}")


@app.command()
def verify(
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    repair: Annotated[
        bool,
        typer.Option(
            help="Remove orphan blobs (never indexed) and what interrupted puts left over an "
            "hour ago (temporary files, incomplete uploads).",
        ),
    ] = False,
    grace: Annotated[
        float, typer.Option(help="Seconds to wait before confirming an orphan (in-flight ingest).")
    ] = 30.0,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Check that the index and the blob store agree; exit 0 only when consistent."""
    settings = _existing_box(config, data_dir)
    from drimbox.bootstrap import build_adapters
    from drimbox.services.reconcile import reconcile

    blobs, index, audit = build_adapters(settings)
    try:
        report = reconcile(blobs, index, audit, repair=repair, grace_seconds=grace)
    finally:
        index.close()
        blobs.close()
    payload = {
        "indexed": report.indexed,
        "blobs": report.blobs,
        "orphans": len(report.orphans),
        "removed": report.removed,
        "temporary_removed": report.temporary_removed,
        "missing": report.missing,
        "consistent": report.consistent,
    }
    if as_json:
        typer.echo(json.dumps(payload))
    else:
        out = Console()
        out.print(f"indexed instances: {report.indexed:,}   blobs held: {report.blobs:,}")
        out.print(f"orphan blobs: {len(report.orphans):,} (removed {report.removed:,})")
        out.print(f"missing blobs: {len(report.missing):,}")
        if repair:
            out.print(f"leftovers of interrupted puts removed: {report.temporary_removed:,}")
        for key in report.missing[:20]:
            out.print(f"  missing: {key}")
        if report.orphans and not repair:
            out.print("run again with --repair to remove the orphan blobs")
        out.print("[green]consistent[/]" if report.consistent else "[red]inconsistent[/]")
    if not report.consistent:
        raise typer.Exit(code=1)


@app.command()
def publications(
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List the exams of the source workflow: state, version, registry entry, reason."""
    settings = _existing_box(config, data_dir)
    from drimbox.index.publications import open_publication_store

    store = open_publication_store(settings.resolved_index_url)
    try:
        exams = store.exams()
        jobs = store.jobs()
    finally:
        store.close()
    pending: dict[str, int] = {}
    for job in jobs:
        if job.state is JobState.PENDING:
            pending[job.study_instance_uid] = pending.get(job.study_instance_uid, 0) + 1
    rows = [
        {
            "study_instance_uid": exam.study_instance_uid,
            "state": exam.state.value,
            "version": exam.version,
            "kos_sop_instance_uid": exam.kos_sop_instance_uid,
            "registry_entry_id": exam.registry_entry_id,
            "pending_jobs": pending.get(exam.study_instance_uid, 0),
            "reason": exam.reason,
            "updated_at": exam.updated_at.isoformat(),
        }
        for exam in exams
    ]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    table = Table(title="publications")
    for column in ("study", "state", "version", "registry entry", "pending", "reason", "updated"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            str(row["study_instance_uid"]),
            str(row["state"]),
            str(row["version"]),
            str(row["registry_entry_id"] or ""),
            str(row["pending_jobs"]),
            str(row["reason"] or ""),
            str(row["updated_at"])[:19],
        )
    Console(width=200).print(table)


@registry_app.command("serve")
def registry_serve(
    http_port: Annotated[int, typer.Option(help="HTTP port.")] = 8090,
    host: Annotated[str, typer.Option(help="Address (loopback only for now).")] = "127.0.0.1",
    database: Annotated[
        str | None,
        typer.Option(help="SQLAlchemy URL of the store (default: registry.sqlite3 here)."),
    ] = None,
    audit: Annotated[Path | None, typer.Option(help="Audit trail file.")] = None,
    production: Annotated[bool, typer.Option(help="Refuse test INS OIDs.")] = False,
) -> None:
    """Run the national registry standalone (FHIR base: http://HOST:PORT/registry)."""
    if not is_loopback(host):
        _console.print(
            f"[bold red]configuration error:[/] refusing to listen on {host!r}: the registry "
            "has no authentication yet; use 127.0.0.1 behind an authenticating proxy"
        )
        raise typer.Exit(code=2)
    from registry.service.cli import serve_registry

    url = database or f"sqlite:///{Path('registry.sqlite3').resolve()}"
    serve_registry(host, http_port, url, production=production, audit_path=audit)


@app.command()
def version() -> None:
    """Print the version."""
    from importlib.metadata import version as _version

    typer.echo(_version("drimbox"))


def main() -> None:  # pragma: no cover - console entry point
    """Run the CLI."""
    sys.exit(app())
