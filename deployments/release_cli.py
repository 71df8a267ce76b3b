"""`slipway release|rollback|status|unlock`: an environment's releases."""

from __future__ import annotations

from typing import Annotated

import typer

from deployments.cli_common import JsonOpt, VerboseOpt, fail, require_prefect_api, run_flow, show

EnvOpt = Annotated[str, typer.Option("--env", help="The environment (its block's name).")]


def _checked(env: str, version: str | None = None, what: str = "version") -> None:
    """Refuse a malformed environment name or version before anything runs or is touched."""
    from blocks.errors import SlipwayError
    from blocks.input_checks import check_environment_name, check_version

    try:
        check_environment_name(env)
        if version is not None:
            check_version(version, what)
    except SlipwayError as exc:
        fail(str(exc))


def parse_flags(items: list[str]) -> dict[str, str]:
    """`KEY=VALUE` items as a mapping; a malformed one is a usage error."""
    found = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            fail(f"--flag {item!r} is not KEY=VALUE, e.g. --flag new_checkout=on")
        found[key.strip()] = value
    return found


def release_cmd(
    version: Annotated[str, typer.Argument(help="The version: every service's image tag.")],
    env: EnvOpt,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Preflight and plan (pending SQL) only.")
    ] = False,
    skip_check: Annotated[
        list[str] | None,
        typer.Option(help="Skip a preflight check on purpose (recorded); repeatable."),
    ] = None,
    flag: Annotated[
        list[str] | None,
        typer.Option(
            help="Kubernetes: set a feature flag KEY=VALUE in the flags ConfigMap with the "
            "release (a rollback puts the old value back); repeatable."
        ),
    ] = None,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Release VERSION: preflight, backup, migrations, rollout, health; rolls back on failure.

    --json: the release's record (id, version, previous_version, status, steps...; with
    --dry-run the plan: pending_migrations, previous_version...).
    """
    _checked(env, version)
    flags = parse_flags(flag or [])
    from flows.release import release

    r = run_flow(
        lambda: release(version, env, dry_run, list(skip_check or []), flags=flags or None),
        verbose,
    )
    if dry_run:
        pending = r["pending_migrations"]
        text = (
            f"plan: {r['previous_version'] or 'nothing'} -> {version} on {env}; "
            f"{len(pending)} pending migrations{': ' + ', '.join(pending) if pending else ''}"
        )
    else:
        text = f"{env} runs {version} (was {r['previous_version'] or 'nothing'}); release {r['id']}"
    show(r, as_json, text)


def rollback_cmd(
    env: EnvOpt,
    to: Annotated[
        str | None, typer.Option("--to", help="Version to go back to (default: the one before).")
    ] = None,
    release_id: Annotated[
        str | None, typer.Option("--release", help="Which release (default: unfinished/last).")
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", help="Confirm restoring the database when needed.")
    ] = False,
    to_revision: Annotated[
        int | None,
        typer.Option(
            "--to-revision",
            min=1,
            help="Kubernetes: put this revision of the Deployments back, as `kubectl rollout "
            "undo --to-revision`; ECS: task definition revision N of each family (see `slipway "
            "status`). Database and journal untouched.",
            show_default=False,
        ),
    ] = None,
    services: Annotated[
        list[str] | None,
        typer.Option("--service", help="With --to-revision: only this service (repeatable)."),
    ] = None,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Roll back ENV's last (or unfinished) release to the version live before it.

    --json: {"version", "database_restored", "detail", ...}.
    """
    _checked(env, to, "--to version")
    if to_revision is not None and (to or release_id):
        fail("--to-revision goes alone: it does not undo a release (drop --to / --release)")
    if services and to_revision is None:
        fail("--service goes with --to-revision")
    from flows.rollback import rollback

    r = run_flow(
        lambda: rollback(
            env, to, release_id, yes, to_revision=to_revision, services=services or None
        ),
        verbose,
    )
    restored = "database restored" if r["database_restored"] else "database kept"
    where = f" (revision {to_revision})" if to_revision is not None else ""
    show(r, as_json, f"{env} back on {r['version'] or 'nothing'}{where}; {restored}")


def status_cmd(env: EnvOpt, as_json: JsonOpt = False) -> None:
    """The live version, the lock holder, recent releases and any left unfinished.

    --json: {"environment", "live_version", "services", "lock", "releases": [{"id",
    "version", "previous_version", "status", "error"}], "unfinished": ["id", ...],
    "revisions": {service: [one line per kept revision (Kubernetes: its ReplicaSets) or
    deployment (ECS)]}}.
    """
    _checked(env)
    require_prefect_api()  # blocks are read from it: the local API when none is set
    from blocks.environment import Environment
    from blocks.errors import SlipwayError
    from tasks.release.journal import NEEDS_ROLLBACK, list_releases
    from tasks.release.lock import describe, lock_holder
    from tasks.rollout import open_target

    try:
        environment = Environment.resolve(env)
        store = environment.store()
        with open_target(environment.target) as target:
            live = target.live_versions()
            revisions = target.history()
        holder = lock_holder(environment.database(), env)
        releases = [j.record for j in list_releases(store.client(), store, env)[:10]]
    except SlipwayError as exc:
        fail(str(exc))
    unfinished = [r for r in releases if r.status in NEEDS_ROLLBACK]
    data = {
        "environment": env,
        "live_version": live.version,
        "services": live.services,
        "lock": holder.model_dump(mode="json") if holder else None,
        "releases": [
            {k: getattr(r, k) for k in ("id", "version", "previous_version", "status", "error")}
            for r in releases
        ],
        "unfinished": [r.id for r in unfinished],
        "revisions": revisions,
    }
    lines = [
        f"{env}: live {live.version or 'mixed or none'} ({live.describe()})",
        f"lock: {describe(holder) if holder else 'free'}",
    ]
    for service, kept in revisions.items():
        lines.append(f"{service}: " + "; ".join(kept))
    lines += [
        f"  {r.id}  {r.previous_version or '-'} -> {r.version}  {r.status}"
        + (f"  ({r.error})" if r.error else "")
        for r in releases
    ]
    if unfinished:
        names = ", ".join(f"{r.id} ({r.version}, {r.status})" for r in unfinished)
        lines.append(f"unfinished: {names}: run `slipway rollback --env {env}`")
    show(data, as_json, "\n".join(lines))


def unlock_cmd(env: EnvOpt, as_json: JsonOpt = False) -> None:
    """End a stale holder of ENV's release lock (a release whose process hangs).

    --json: {"environment", "ended": the holder ended, or null when it was not locked}.
    """
    _checked(env)
    require_prefect_api()  # blocks are read from it: the local API when none is set
    from blocks.environment import Environment
    from blocks.errors import SlipwayError
    from tasks.release.lock import break_lock, describe

    try:
        holder = break_lock(Environment.resolve(env).database(), env)
    except SlipwayError as exc:
        fail(str(exc))
    show(
        {"environment": env, "ended": holder.model_dump(mode="json") if holder else None},
        as_json,
        f"ended {describe(holder)}" if holder else f"{env} was not locked",
    )


def add_release_commands(app: typer.Typer) -> None:
    """Register these commands on the `slipway` app."""
    app.command("release")(release_cmd)
    app.command("rollback")(rollback_cmd)
    app.command("status")(status_cmd)
    app.command("unlock")(unlock_cmd)
