"""Reading a Deployment's rollout the way `kubectl rollout status` does, plain functions.

kubectl's rule (polymorphichelpers/rollout_status.go): while `metadata.generation` is above
`status.observedGeneration`, the spec change is not seen yet; then the rollout failed if the
Progressing condition's reason is `ProgressDeadlineExceeded`; it waits while
`updatedReplicas` is below `spec.replicas`, while `status.replicas` is above
`updatedReplicas` (old pods terminating), or while `availableReplicas` is below
`updatedReplicas`; otherwise it rolled out. Pods that cannot start say why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

REVISION = "deployment.kubernetes.io/revision"
DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
# Container states worth naming while a rollout waits: the pod will not get ready by itself.
STUCK = {
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
}


@dataclass(frozen=True)
class RolloutStatus:
    done: bool
    detail: str
    failed: bool = False  # waiting cannot help any more


def rollout_status(deployment: Any, newest: str | None = None) -> RolloutStatus:
    """kubectl's verdict on a `V1Deployment`.

    `newest`: the name of the ReplicaSet of its current template, when known. A deadline
    verdict naming another one is an earlier rollout's (the controller says which
    ReplicaSet timed out, and keeps the verdict until it sees progress): kubectl would stop
    on it; Slipway waits for the current rollout's own."""
    name = deployment.metadata.name
    status = deployment.status
    if (deployment.metadata.generation or 0) > (status.observed_generation or 0):
        return RolloutStatus(False, "waiting for the spec update to be observed")
    for condition in status.conditions or []:
        if condition.type == "Progressing" and condition.reason == DEADLINE_EXCEEDED:
            if newest is not None and f'"{newest}"' not in (condition.message or ""):
                return RolloutStatus(False, "waiting for the rollout to progress")
            return RolloutStatus(
                False, f"deployment {name} exceeded its progress deadline", failed=True
            )
    wanted = deployment.spec.replicas if deployment.spec.replicas is not None else 1
    updated = status.updated_replicas or 0
    if updated < wanted:
        return RolloutStatus(False, f"{updated} of {wanted} new replicas updated")
    if (status.replicas or 0) > updated:
        return RolloutStatus(
            False, f"{(status.replicas or 0) - updated} old replicas pending termination"
        )
    if (status.available_replicas or 0) < updated:
        return RolloutStatus(
            False, f"{status.available_replicas or 0} of {updated} updated replicas available"
        )
    return RolloutStatus(True, f"rolled out ({updated} replicas)")


def pod_problems(pods: list[Any]) -> list[str]:
    """Why pods cannot get ready, one phrase each: a crash loop with its container's last
    state, an image that cannot be pulled."""
    found = []
    for pod in pods:
        for container in (pod.status.container_statuses or []) if pod.status else []:
            waiting = container.state.waiting if container.state else None
            last = container.last_state.terminated if container.last_state else None
            if waiting is None or waiting.reason not in STUCK:
                if last is not None and (container.restart_count or 0) > 0:
                    # Caught between two crashes of a loop: it runs, for now.
                    found.append(
                        f"pod {pod.metadata.name}: {container.name} restarting "
                        f"({container.restart_count} restarts), last exit {last.exit_code} "
                        f"({last.reason or 'terminated'})"
                    )
                continue
            text = f"pod {pod.metadata.name}: {container.name} {waiting.reason}"
            if last is not None:
                text += f", last exit {last.exit_code} ({last.reason or 'terminated'})"
            elif waiting.message:
                text += f" ({waiting.message[:120]})"
            found.append(text)
    return found


def revision(replica_set: Any) -> int:
    annotations: Mapping[str, str] = replica_set.metadata.annotations or {}
    try:
        return int(annotations.get(REVISION, "0"))
    except ValueError:
        return 0


def image_tag(image: str) -> str:
    """The tag of `repo[:port]/name[:tag][@digest]`; `latest` when it has none."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.rsplit(":", 1)[1] if ":" in last else "latest"


def with_tag(image: str, tag: str) -> str:
    """The same repository at `tag` (a digest is dropped: it pins the old image)."""
    name = image.split("@", 1)[0]
    head, _, last = name.rpartition("/")
    repository = last.rsplit(":", 1)[0]
    return f"{head}/{repository}:{tag}" if head else f"{repository}:{tag}"
