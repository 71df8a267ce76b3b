"""`slipway doctor`: every system Slipway needs, checked side by side, one row each.

`config` reads the configuration as the commands do, `checks` holds one check per system,
`runner` runs them under a deadline. Nothing here starts a flow or a Prefect server; the
only write is the store's test object, deleted at once.
"""

from __future__ import annotations

from collections.abc import Callable

from blocks.errors import SlipwayError
from tasks.doctor import checks
from tasks.doctor.config import DoctorConfig, notifier_name
from tasks.doctor.runner import CheckResult, Shared, Skipped, run_checks

__all__ = ["CheckResult", "DoctorConfig", "Skipped", "diagnose"]


def diagnose(
    load_config: Callable[[], DoctorConfig],
    prefect_api: Callable[[], str],
    *,
    send_test: bool,
    timeout: float,
) -> list[CheckResult]:
    """The report: the configuration and the Prefect API first (side by side), then every
    system the configuration names, side by side; each check under `timeout` seconds."""
    found: list[DoctorConfig] = []

    def configuration() -> str:
        config = load_config()
        found.append(config)
        if config.problems:
            raise SlipwayError("; ".join(config.problems))
        return config.summary()

    first = run_checks({"configuration": configuration, "prefect api": prefect_api}, timeout)
    config = found[0] if found else DoctorConfig("configuration not read")
    return first + run_checks(system_checks(config, send_test), timeout)


def _skip(why: str) -> Callable[[], str]:
    def check() -> str:
        raise Skipped(why)

    return check


def system_checks(config: DoctorConfig, send_test: bool) -> dict[str, Callable[[], str]]:
    """One check per system, in report order; a part missing from the configuration is
    skipped (the configuration row says why)."""
    planned: dict[str, Callable[[], str]] = {}
    db, store = config.database, config.store
    server = Shared(lambda: checks.server_version(db)) if db is not None else None
    if db is not None and server is not None:
        planned["database"] = lambda: checks.check_database(db, server)
    else:
        planned["database"] = _skip("no database configured")
    planned["pg_dump/pg_restore"] = lambda: checks.check_pg_tools(server)
    if store is not None:
        planned["backup store"] = lambda: checks.check_store(store)
    else:
        planned["backup store"] = _skip("no backup store configured")
    for notifier in config.notifiers:
        planned[f"notifier {notifier_name(notifier)}"] = (
            lambda n=notifier: checks.check_notifier(n, send_test)  # type: ignore[misc]
        )
    if not config.notifiers:
        planned["notifiers"] = _skip(config.notifiers_unread or "none configured")
    settings = config.target
    target = Shared(lambda: checks.inspect_target(settings)) if settings is not None else None
    if target is not None:
        planned["rollout target"] = lambda: checks.check_target(target)
    else:
        planned["rollout target"] = _skip("only with --env NAME (an environment's target)")
    migrations = config.migrations
    if migrations is not None:
        planned["migrations"] = lambda: checks.check_migrations(migrations, target)
    else:
        planned["migrations"] = _skip("only with --env NAME (an environment's migrations)")
    return planned
