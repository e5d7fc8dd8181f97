"""The ``drimbox`` command."""

from __future__ import annotations

import typer

app = typer.Typer(help="drimbox: a DRIMbox imaging gateway.", no_args_is_help=True)


@app.command()
def version() -> None:
    """Print the version."""
    from importlib.metadata import version as _version

    typer.echo(_version("drimbox"))
