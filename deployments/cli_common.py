"""What the `slipway` commands share: one-line failures, the Prefect API probe, running a flow."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
from collections.abc import Callable
from typing import Annotated, Any, NoReturn, TypeVar

import typer

T = TypeVar("T")

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect's logs.")]


def fail(message: str) -> NoReturn:
    """One line on stderr, exit status 1."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def prefect_api_down() -> str | None:
    """The configured Prefect API URL when it does not answer, else None."""
    url = os.environ.get("PREFECT_API_URL")
    return None if not url or _answers(url) else url


@functools.cache
def _answers(url: str) -> bool:
    """Whether the API's /health answers (401/403 too: credentials are Prefect's to check).

    With the standard library, not httpx: its import would delay the mirror's early copies.
    A certificate this probe cannot verify is Prefect's to judge, with its TLS settings
    (PREFECT_API_SSL_CERT_FILE and the like).
    """
    import http.client
    import ssl
    import urllib.error
    import urllib.request

    if not url.startswith(("http://", "https://")):
        return False
    try:
        health = f"{url.rstrip('/')}/health"
        with urllib.request.urlopen(health, timeout=3) as response:  # noqa: S310 - http(s)
            status: int = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except urllib.error.URLError as exc:
        return isinstance(exc.reason, ssl.SSLCertVerificationError)
    except (OSError, http.client.HTTPException, ValueError):
        return False
    return status != 404 and status < 500


def require_prefect_api() -> None:
    """Fail in one line, before anything runs, when PREFECT_API_URL does not answer."""
    if down := prefect_api_down():
        fail(
            f"the Prefect API at {down} does not answer: start it, or unset PREFECT_API_URL "
            "to run on a temporary local API"
        )


def _foreground_settings() -> contextlib.AbstractContextManager[object]:
    """Prefect settings for a run in this terminal: no flow-run heartbeats.

    Heartbeats let a server's automation mark a dead worker's run crashed; here the
    operator sees the process end, and a killed release is found by its journal. Each
    flow's heartbeat thread also holds its exit up to a second. An explicit
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY keeps them.
    """
    if {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "PREFECT_RUNNER_HEARTBEAT_FREQUENCY"} & set(
        os.environ
    ):
        return contextlib.nullcontext()
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    return temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})


def run_flow(call: Callable[[], T], verbose: bool) -> T:
    """Run a flow; expected failures become one line on stderr and exit status 1."""
    from blocks.errors import SlipwayError

    require_prefect_api()

    if not verbose:
        from prefect.logging.handlers import PrefectConsoleHandler

        # The flow's own logs still reach the Prefect API; the terminal gets the outcome.
        for logger in (logging.getLogger(), logging.getLogger("prefect")):
            for handler in logger.handlers:
                if isinstance(handler, PrefectConsoleHandler):
                    handler.setLevel(logging.CRITICAL)
    try:
        with _foreground_settings():
            return call()
    except SlipwayError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted")


def show(data: Any, as_json: bool, text: str) -> None:
    """Print a result: JSON with --json, else the line for people."""
    typer.echo(json.dumps(data, default=str) if as_json else text)
