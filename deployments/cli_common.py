"""What the `slipway` commands share: one-line failures, the Prefect API probe, running a flow."""

from __future__ import annotations

import contextlib
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
    """The configured Prefect API URL when its /health does not answer, else None."""
    url = os.environ.get("PREFECT_API_URL")
    if not url:
        return None
    status = _status(f"{url.rstrip('/')}/health")
    return url if status is None or status == 404 or status >= 500 else None


def require_prefect_api() -> None:
    """Fail in one line, before anything runs, unless PREFECT_API_URL (when set) answers and
    accepts this client's credentials: a run Prefect cannot record does not start."""
    if down := prefect_api_down():
        fail(
            f"the Prefect API at {down} does not answer: start it, or unset PREFECT_API_URL "
            "to run on a temporary local API"
        )
    url = os.environ.get("PREFECT_API_URL")
    query = f"{(url or '').rstrip('/')}/flows/filter"
    if url and (status := _status(query, _credentials())) in (401, 403):
        fail(
            f"the Prefect API at {url} refused the credentials ({status}): check "
            "PREFECT_API_KEY (or PREFECT_API_AUTH_STRING)"
        )


def _credentials() -> dict[str, str]:
    """The Authorization header Prefect's client sends (its settings: environment or profile)."""
    import base64

    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_KEY

    if auth := PREFECT_API_AUTH_STRING.value():
        return {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()}
    if key := PREFECT_API_KEY.value():
        return {"Authorization": f"Bearer {key}"}
    return {}


def _status(url: str, credentials: dict[str, str] | None = None) -> int | None:
    """The HTTP status of a GET, or with `credentials` of a one-row POST query; None when
    nothing answers.

    With the standard library: httpx would add its import to every command. A certificate
    this probe cannot verify is Prefect's to judge, with its TLS settings
    (PREFECT_API_SSL_CERT_FILE and the like): it counts as an answer.
    """
    import http.client
    import ssl
    import urllib.error
    import urllib.request

    if not url.startswith(("http://", "https://")):
        return None
    request = urllib.request.Request(url)  # noqa: S310 - http(s) only, checked above
    if credentials is not None:
        headers = {"Content-Type": "application/json", **credentials}
        request = urllib.request.Request(url, b'{"limit": 1}', headers, method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=3) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except urllib.error.URLError as exc:
        return 200 if isinstance(exc.reason, ssl.SSLCertVerificationError) else None
    except (OSError, http.client.HTTPException, ValueError):
        return None


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
