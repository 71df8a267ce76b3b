"""The Deployment status the controller writes (calculateStatus, syncRolloutStatus and
checkPausedConditions in pkg/controller/deployment): replica counts from its ReplicaSets,
conditions Available and Progressing."""

from __future__ import annotations

import calendar
import time
from typing import Any

from tests.k8s_sim.workloads import (
    condition,
    remove_condition,
    set_condition,
    surge_and_unavailable,
)


def replicas(obj: dict[str, Any]) -> int:
    return int(obj["spec"].get("replicas", 1))


def status_count(obj: dict[str, Any], field: str) -> int:
    return int((obj.get("status") or {}).get(field, 0))


def complete(d: dict[str, Any], status: dict[str, Any]) -> bool:
    """DeploymentComplete: every wanted replica updated and available, none other."""
    wanted = replicas(d)
    return bool(
        status.get("updatedReplicas", 0) == wanted
        and status.get("replicas", 0) == wanted
        and status.get("availableReplicas", 0) == wanted
        and status.get("observedGeneration", 0) >= d["metadata"].get("generation", 1)
    )


def _parse_time(stamp: str) -> float:
    return float(calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")))


def calculate_status(
    d: dict[str, Any],
    status: dict[str, Any],
    replica_sets: list[dict[str, Any]],
    new_rs: dict[str, Any] | None,
) -> None:
    """calculateStatus: counts and the Available condition, into `status`."""
    status["observedGeneration"] = d["metadata"].get("generation", 1)
    status["replicas"] = sum(status_count(rs, "replicas") for rs in replica_sets)
    status["updatedReplicas"] = status_count(new_rs, "replicas") if new_rs else 0
    status["readyReplicas"] = sum(status_count(rs, "readyReplicas") for rs in replica_sets)
    status["availableReplicas"] = sum(status_count(rs, "availableReplicas") for rs in replica_sets)
    total = sum(replicas(rs) for rs in replica_sets)
    status["unavailableReplicas"] = max(0, total - status["availableReplicas"])
    for field in (
        "readyReplicas",
        "availableReplicas",
        "unavailableReplicas",
        "updatedReplicas",
    ):
        if status[field] == 0:
            del status[field]  # omitempty, as the API serialises them
    if status["replicas"] == 0:
        del status["replicas"]
    _, unavailable = surge_and_unavailable(d)
    if status.get("availableReplicas", 0) >= replicas(d) - unavailable:
        set_condition(
            status,
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
        )
    else:
        set_condition(
            status,
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
        )


def paused_condition(d: dict[str, Any], status: dict[str, Any]) -> None:
    """checkPausedConditions: Progressing Unknown while paused, and on resume."""
    cond = condition(status, "Progressing")
    if cond and cond["reason"] == "ProgressDeadlineExceeded":
        return
    paused_before = bool(cond and cond["reason"] == "DeploymentPaused")
    if d["spec"].get("paused") and not paused_before:
        set_condition(status, "Progressing", "Unknown", "DeploymentPaused", "Deployment is paused")
    elif not d["spec"].get("paused") and paused_before:
        set_condition(
            status, "Progressing", "Unknown", "DeploymentResumed", "Deployment is resumed"
        )


def progress(d: dict[str, Any], status: dict[str, Any], old: dict[str, Any], rs_name: str) -> None:
    """syncRolloutStatus: the Progressing condition."""
    cond = condition(status, "Progressing")
    complete_before = (
        status.get("replicas", 0) == status.get("updatedReplicas", 0)
        and cond is not None
        and cond["reason"] == "NewReplicaSetAvailable"
    )
    if complete_before:
        return
    if complete(d, status):
        set_condition(
            status,
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            f'ReplicaSet "{rs_name}" has successfully progressed.',
        )
        return

    def old_pods(s: dict[str, Any]) -> int:
        return int(s.get("replicas", 0)) - int(s.get("updatedReplicas", 0))

    progressing = (
        status.get("updatedReplicas", 0) > old.get("updatedReplicas", 0)
        or old_pods(status) < old_pods(old)
        or status.get("readyReplicas", 0) > old.get("readyReplicas", 0)
        or status.get("availableReplicas", 0) > old.get("availableReplicas", 0)
    )
    if progressing:
        keep = cond["lastTransitionTime"] if cond and cond["status"] == "True" else None
        remove_condition(status, "Progressing")
        set_condition(
            status,
            "Progressing",
            "True",
            "ReplicaSetUpdated",
            f'ReplicaSet "{rs_name}" is progressing.',
        )
        if keep:
            new_cond = condition(status, "Progressing")
            assert new_cond is not None
            new_cond["lastTransitionTime"] = keep
        return
    # DeploymentTimedOut: no base without a condition; a finished rollout's condition is
    # no base either (the next pass sees the new ReplicaSet's progress).
    if cond is None or cond["reason"] == "NewReplicaSetAvailable":
        return
    deadline = int(d["spec"].get("progressDeadlineSeconds", 600))
    if (
        cond["reason"] == "ProgressDeadlineExceeded"
        or _parse_time(cond["lastUpdateTime"]) + deadline < time.time()
    ):
        set_condition(
            status,
            "Progressing",
            "False",
            "ProgressDeadlineExceeded",
            f'ReplicaSet "{rs_name}" has timed out progressing.',
        )
