"""`slipway doctor`: check the configuration and every system it names, in one table."""

from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

import typer

from deployments.cli_common import JsonOpt, fail

if TYPE_CHECKING:
    from tasks.doctor import CheckResult, DoctorConfig


@dataclass(frozen=True)
class PrefectApi:
    """The API the commands would use, found without starting anything."""

    url: str | None
    source: str
    down: bool = False


def _find_api() -> PrefectApi:
    """PREFECT_API_URL, else Prefect's profile, else PREFECT_HOME's shared local API when it
    runs; its /health probed once. A local API found is the one this process then reads."""
    from prefect.settings import get_current_settings

    from deployments.cli_common import api_down, profile_api_url
    from deployments.local_api import use_local_api

    if url := os.environ.get("PREFECT_API_URL"):
        return PrefectApi(url, "PREFECT_API_URL", api_down(url))
    if url := profile_api_url():
        return PrefectApi(url, "Prefect's profile", api_down(url))
    home = get_current_settings().home.expanduser().resolve()
    if url := use_local_api(False, start=False):
        return PrefectApi(url, f"the local API of {home}")
    return PrefectApi(None, f"the local API of {home}")


def _prefect_api(api: PrefectApi) -> str:
    """The API answers /health and accepts this client's credentials (cli_common's probes)."""
    from blocks.errors import SlipwayError
    from deployments.cli_common import api_credentials, http_status
    from tasks.doctor import Skipped

    if api.url is None:
        raise Skipped(
            f"no PREFECT_API_URL, and {api.source} is not running: the next command starts it"
        )
    if api.down:
        raise SlipwayError(
            f"the Prefect API at {api.url} ({api.source}) does not answer /health: start it, "
            "or fix the URL"
        )
    status = http_status(f"{api.url.rstrip('/')}/flows/filter", api_credentials())
    if status in (401, 403):
        raise SlipwayError(
            f"the Prefect API at {api.url} refused the credentials ({status}): check "
            "PREFECT_API_KEY (or PREFECT_API_AUTH_STRING)"
        )
    return f"{api.url} ({api.source}) answers and accepts the credentials"


def _load_config(env: str | None, api: PrefectApi) -> DoctorConfig:
    """The configuration `slipway release --env` (or, without, `slipway backup`) would use."""
    from tasks.doctor.config import DoctorConfig, from_environment, from_process_environment

    if env is None:
        return from_process_environment(api.url is not None and not api.down)
    config = DoctorConfig(f"environment {env}")
    if api.url is None:
        config.problems.append(
            f"--env {env} reads the environment's blocks from the Prefect API: set "
            f"PREFECT_API_URL, or start {api.source} (e.g. `slipway status --env {env}`)"
        )
    elif api.down:
        config.problems.append(
            f"cannot read environment {env}'s blocks: the Prefect API at {api.url} does not answer"
        )
    else:
        config = from_environment(env)
    return config


def _table(results: list[CheckResult]) -> str:
    rows = [("check", "status", "detail")] + [(r.check, r.status, r.detail) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    return "\n".join(f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c}".rstrip() for a, b, c in rows)


def _quiet_prefect() -> None:
    """Prefect's console logs (a block loaded, a message sent) are not the report.

    Through its setting, before anything imports Prefect: only the checks that need it
    (blocks, notifiers, the API's credentials) import it, and the others run without.
    """
    os.environ["PREFECT_LOGGING_LEVEL"] = "CRITICAL"


def _import_blocks_first(env: str | None) -> None:
    """Import the blocks here, when a check needs them, not in two check threads at once:
    Prefect's modules import each other, and a thread can get one half-initialised."""
    from tasks.notify import NOTIFIER_VARIABLES

    if env or any(os.environ.get(v) for v in NOTIFIER_VARIABLES):
        for module in ("blocks.environment", "blocks.notifiers"):
            importlib.import_module(module)


def doctor_cmd(
    env: Annotated[
        str | None,
        typer.Option(
            "--env",
            metavar="NAME",
            help="Check this environment (its blocks) instead of the variables.",
        ),
    ] = None,
    send_test: Annotated[
        bool, typer.Option("--send-test", help="Send each notifier a test message.")
    ] = False,
    timeout: Annotated[
        float,
        typer.Option(
            min=0.1,
            metavar="SECONDS",
            help="Seconds each check may take before it counts as failed.",
        ),
    ] = 20.0,
    as_json: JsonOpt = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect's logs.")] = False,
) -> None:
    """Check the configuration, database, tools, store, Prefect API, notifiers, target and
    migrations side by side; one row each, exit status 1 when any fails. Runs no flow."""
    from blocks.errors import SlipwayError
    from blocks.input_checks import check_environment_name
    from tasks.doctor import diagnose

    if env is not None:
        try:
            check_environment_name(env)
        except SlipwayError as exc:
            fail(str(exc))
    if not verbose:
        _quiet_prefect()
    _import_blocks_first(env)
    api = _find_api()
    results = diagnose(
        lambda: _load_config(env, api),
        lambda: _prefect_api(api),
        send_test=send_test,
        timeout=timeout,
    )
    if as_json:
        typer.echo(json.dumps([r.as_dict() for r in results]))
    else:
        typer.echo(_table(results))
    if any(r.status == "FAIL" for r in results):
        raise typer.Exit(1)
