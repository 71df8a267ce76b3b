"""The `slipway` command line."""

from __future__ import annotations

from importlib.metadata import version

import typer

app = typer.Typer(
    help="Slipway: release and backup automation as Prefect workflows.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command("version")
def show_version() -> None:
    """Print Slipway's version."""
    typer.echo(version("slipway"))


if __name__ == "__main__":
    app()
