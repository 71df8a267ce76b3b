"""The job controller, much simplified from pkg/controller/job: a Job runs
`parallelism` Pods at a time (owned by it, labelled `batch.kubernetes.io/job-name` and
`batch.kubernetes.io/controller-uid` as the API server's defaulting labels them) until
`completions` succeeded (condition Complete) or more than `backoffLimit` failed (condition
Failed, reason BackoffLimitExceeded); status `active`, `succeeded`, `failed`,
`startTime`, `completionTime`.

Deleting a batch/v1 Job without a propagation policy orphans its Pods, as the real API
server does (with a warning): see `ORPHAN_WARNING`."""

from __future__ import annotations

import copy
import secrets
from typing import Any

from tests.k8s_sim.resources import resource
from tests.k8s_sim.store import Store, now
from tests.k8s_sim.store_errors import ApiError
from tests.k8s_sim.workloads import (
    SAFE_ALPHABET,
    condition,
    owned_by,
    owner_reference,
)

JOBS = resource("Job")
PODS = resource("Pod")
ORPHAN_WARNING = (
    "child pods are preserved by default when jobs are deleted; set propagationPolicy=Background "
    "to remove them or set propagationPolicy=Orphan to suppress this warning"
)


def _finish(status: dict[str, Any], kind: str, **reason: str) -> None:
    stamp = now()
    entry = {"type": kind, "status": "True", "lastProbeTime": stamp, "lastTransitionTime": stamp}
    status["conditions"] = [*(status.get("conditions") or []), {**entry, **reason}]


class JobController:
    def __init__(self, store: Store) -> None:
        self.store = store

    def sync_all(self) -> None:
        jobs, _ = self.store.list_objects(JOBS, None)
        for job in jobs:
            try:
                self.sync(job)
            except ApiError as exc:
                if exc.code not in (404, 409):
                    raise

    def sync(self, job: dict[str, Any]) -> None:
        ns, spec = job["metadata"]["namespace"], job["spec"]
        status = copy.deepcopy(job.get("status") or {})
        pods, _ = self.store.list_objects(PODS, ns, lambda p: owned_by(p, job))
        phases = [(p.get("status") or {}).get("phase", "Pending") for p in pods]
        succeeded, failed = phases.count("Succeeded"), phases.count("Failed")
        active = len(phases) - succeeded - failed
        finished = any(
            (c := condition(status, kind)) and c["status"] == "True"
            for kind in ("Complete", "Failed")
        )
        completions = int(spec.get("completions", 1))
        if not finished and not spec.get("suspend"):
            if succeeded >= completions:
                _finish(status, "Complete")
                status["completionTime"] = now()
            elif failed > int(spec.get("backoffLimit", 6)):
                reason = {
                    "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit",
                }
                _finish(status, "Failed", **reason)
            else:
                wanted = min(int(spec.get("parallelism", 1)), completions - succeeded)
                for _ in range(max(0, wanted - active)):
                    self.store.create(PODS, ns, self._pod(job))
                    active += 1
        status.setdefault("startTime", now())
        status.update(active=active, succeeded=succeeded, failed=failed)
        status = {k: v for k, v in status.items() if v or k in ("startTime",)}
        if status != (job.get("status") or {}):
            job = copy.deepcopy(job)
            job["status"] = status
            self.store.update(JOBS, ns, job["metadata"]["name"], job, subresource="status")

    def _pod(self, job: dict[str, Any]) -> dict[str, Any]:
        template = copy.deepcopy(job["spec"]["template"])
        meta = template.get("metadata") or {}
        suffix = "".join(secrets.choice(SAFE_ALPHABET) for _ in range(5))
        return {
            "metadata": {
                "name": f"{job['metadata']['name']}-{suffix}",
                "labels": meta.get("labels") or {},
                "annotations": meta.get("annotations") or {},
                "ownerReferences": [owner_reference(job)],
            },
            "spec": {**template.get("spec", {}), "nodeName": "slipway-sim-node"},
        }
