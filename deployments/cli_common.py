"""What the `slipway` commands share: one-line failures, the Prefect API probe, running a flow."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

if TYPE_CHECKING:
    from blocks.config_check import Place

T = TypeVar("T")

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect's logs.")]
DbBlockOpt = Annotated[
    str | None, typer.Option(help="PostgresDatabase block name (default: DATABASE_URL).")
]
StoreBlockOpt = Annotated[
    str | None, typer.Option(help="ObjectStorage block name (default: SLIPWAY_BACKUP_URL).")
]


def fail(message: str) -> NoReturn:
    """One line on stderr, exit status 1."""
    from blocks.text import one_line

    typer.echo(f"error: {one_line(message, None)}", err=True)
    raise typer.Exit(1)


def prefect_api_down() -> str | None:
    """PREFECT_API_URL (from the environment) when its /health does not answer, else None."""
    url = os.environ.get("PREFECT_API_URL")
    return url if url and api_down(url) else None


def api_down(url: str) -> bool:
    status = http_status(f"{url.rstrip('/')}/health")
    return status is None or status == 404 or status >= 500


def require_prefect_api(verbose: bool = False) -> None:
    """Fail in one line, before anything runs, unless the Prefect API answers and accepts this
    client's credentials: a run Prefect cannot record does not start.

    With no API configured (PREFECT_API_URL in the environment or Prefect's profile), the
    runs go to PREFECT_HOME's shared local API, started if need be (deployments.local_api).
    """
    from blocks.errors import SlipwayError

    url = os.environ.get("PREFECT_API_URL") or profile_api_url()
    if not url:
        from deployments.local_api import use_local_api

        try:
            use_local_api(verbose)
        except SlipwayError as exc:
            fail(str(exc))
        return
    if api_down(url):
        fail(
            f"the Prefect API at {url} does not answer: start it, or unset PREFECT_API_URL "
            "to run on the local API in PREFECT_HOME"
        )
    query = f"{url.rstrip('/')}/flows/filter"
    if (status := http_status(query, api_credentials())) in (401, 403):
        fail(
            f"the Prefect API at {url} refused the credentials ({status}): check "
            "PREFECT_API_KEY (or PREFECT_API_AUTH_STRING)"
        )


def profile_api_url() -> str | None:
    """The API URL Prefect's own settings give (profile, prefect.toml, .env), if any."""
    from prefect.context import refresh_global_settings_context
    from prefect.settings import PREFECT_API_URL

    refresh_global_settings_context()  # the environment may have changed since the import
    return PREFECT_API_URL.value() or None


def api_credentials() -> dict[str, str]:
    """The Authorization header Prefect's client sends (its settings: environment or profile)."""
    import base64

    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_KEY

    if auth := PREFECT_API_AUTH_STRING.value():
        return {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()}
    if key := PREFECT_API_KEY.value():
        return {"Authorization": f"Bearer {key}"}
    return {}


def http_status(url: str, credentials: dict[str, str] | None = None) -> int | None:
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

    require_prefect_api(verbose)

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


def check_config(
    *,
    database: bool | None = False,
    store: bool = False,
    places: Sequence[Place] = (),
    database_urls: Sequence[tuple[str, str]] = (),
) -> None:
    """Fail in one line naming every configuration problem, before Prefect is imported
    (see `blocks.config_check.check_environment`)."""
    from blocks.config_check import check_environment
    from blocks.errors import ConfigError

    try:
        check_environment(
            database=database, store=store, places=places, database_urls=database_urls
        )
    except ConfigError as exc:
        fail(str(exc))
