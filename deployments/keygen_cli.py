"""`slipway keygen`: a new age identity and its recipient, the way `age-keygen` gives them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from deployments.cli_common import fail


def keygen_cmd(
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Write the identity to this new file (mode 0600) instead of stdout; the "
            "public key goes to stderr.",
        ),
    ] = None,
) -> None:
    """Print a new age identity (for SLIPWAY_BACKUP_IDENTITY_FILE) and its public key (for
    SLIPWAY_BACKUP_RECIPIENTS), as age-keygen does: either tool reads the other's keys."""
    from tasks.crypto.keys import new_identity

    text, public = new_identity()
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        fail(f"{output} exists at --output: it may hold a key in use; choose a new file")
    except OSError as exc:
        fail(f"cannot create {output} at --output ({exc.strerror}): choose a writable path")
    with os.fdopen(fd, "w") as out:
        out.write(text)
    typer.echo(f"Public key: {public}", err=True)
