"""`slipway k8s pause|resume|restart --env NAME [SERVICE]`: kubectl's rollout verbs, on an
environment's Deployments (all of them, or one), under the environment's release lock."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from deployments.cli_common import JsonOpt, fail, require_prefect_api, show
from deployments.cli_style import SlipwayTyper
from deployments.release_cli import EnvOpt, _checked

if TYPE_CHECKING:
    from blocks.environment import Environment
    from blocks.rollout_kubernetes import KubernetesTargetSettings
    from tasks.rollout.kubernetes import KubernetesTarget

k8s_app = SlipwayTyper(
    help="Kubernetes targets: pause, resume or restart Deployments as `kubectl rollout` does.",
    no_args_is_help=True,
)
ServiceArg = Annotated[
    str | None,
    typer.Argument(
        help="One Deployment of the environment (default: all of them).", show_default=False
    ),
]


def _run(env: str, service: str | None, verb: str, as_json: bool) -> None:
    _checked(env)
    require_prefect_api()
    from blocks.errors import SlipwayError
    from tasks.release.lock import deploy_lock, run_label
    from tasks.rollout.kubernetes import KubernetesTarget

    try:
        environment, settings = _kubernetes(env)
        if service is not None and service not in settings.services:
            raise SlipwayError(
                f"{service} is not a Deployment of {env}: its services are "
                f"{', '.join(settings.services)}"
            )
        chosen = [service] if service else list(settings.services)
        holder = f"k8s {verb} ({run_label()})"
        with (
            deploy_lock(environment.database(), env, holder, environment.policy.lock_wait_seconds),
            KubernetesTarget(settings) as target,
        ):
            for name in chosen:
                _verb(target, verb, name)
    except SlipwayError as exc:
        fail(str(exc))
    done = {"pause": "paused", "resume": "resumed", "restart": "restarted"}[verb]
    show(
        {"environment": env, "action": verb, "deployments": chosen},
        as_json,
        f"{', '.join(chosen)} {done}",
    )


def _kubernetes(env: str) -> tuple[Environment, KubernetesTargetSettings]:
    """The environment and its target's settings; a one-line error unless it is kubernetes."""
    from blocks.environment import Environment
    from blocks.errors import SlipwayError
    from blocks.rollout_kubernetes import KubernetesTargetSettings

    environment = Environment.resolve(env)
    settings = environment.target
    if not isinstance(settings, KubernetesTargetSettings):
        raise SlipwayError(f"{env}'s target is {settings.kind}: this needs a kubernetes target")
    return environment, settings


def _verb(target: KubernetesTarget, verb: str, name: str) -> None:
    if verb == "pause":
        target.pause(name)
    elif verb == "resume":
        target.resume(name)
    else:
        target.restart(name)


@k8s_app.command("pause")
def pause_cmd(env: EnvOpt, service: ServiceArg = None, as_json: JsonOpt = False) -> None:
    """Pause the rollout of ENV's Deployments: template changes wait for `resume`.

    --json: {"environment", "action", "deployments"}."""
    _run(env, service, "pause", as_json)


@k8s_app.command("resume")
def resume_cmd(env: EnvOpt, service: ServiceArg = None, as_json: JsonOpt = False) -> None:
    """Resume paused Deployments (what changed meanwhile rolls out).

    --json: {"environment", "action", "deployments"}."""
    _run(env, service, "resume", as_json)


@k8s_app.command("restart")
def restart_cmd(env: EnvOpt, service: ServiceArg = None, as_json: JsonOpt = False) -> None:
    """Restart Deployments: new pods of the same version, rolled as a release rolls them.

    --json: {"environment", "action", "deployments"}."""
    _run(env, service, "restart", as_json)


flags_app = SlipwayTyper(
    help="Feature flags of a kubernetes target (its flags ConfigMap).", no_args_is_help=True
)


@flags_app.command("set")
def flags_set_cmd(
    env: EnvOpt,
    pairs: Annotated[
        list[str], typer.Argument(metavar="KEY=VALUE...", help="One or more flags to set.")
    ],
    as_json: JsonOpt = False,
) -> None:
    """Set flags in ENV's flags ConfigMap and restart the Deployments that read it.

    --json: {"environment", "before": {...}, "set": {...}}."""
    _checked(env)
    from deployments.release_cli import parse_flags

    flags = parse_flags(pairs)
    require_prefect_api()
    from blocks.errors import SlipwayError
    from tasks.release.lock import deploy_lock, run_label
    from tasks.rollout.kube_release_state import KubeReleaseState
    from tasks.rollout.kubernetes import KubernetesTarget

    try:
        environment, settings = _kubernetes(env)
        holder = f"flags set ({run_label()})"
        with (
            deploy_lock(environment.database(), env, holder, environment.policy.lock_wait_seconds),
            KubernetesTarget(settings) as target,
        ):
            before = KubeReleaseState(target).set_flags(flags)
    except SlipwayError as exc:
        fail(str(exc))
    changed = ", ".join(f"{k}: {before.get(k, '(unset)')} -> {v}" for k, v in flags.items())
    show({"environment": env, "before": before, "set": flags}, as_json, changed)
