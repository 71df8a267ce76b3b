"""Defaulting and validation the API server applies on every write, for the fields the
simulated resources have (as apps/v1, batch/v1 and core/v1 default them)."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from tests.k8s_sim.resources import Resource
from tests.k8s_sim.selectors import selector_matches
from tests.k8s_sim.store_errors import invalid

_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_PROBE_DEFAULTS = {
    "timeoutSeconds": 1,
    "periodSeconds": 10,
    "successThreshold": 1,
    "failureThreshold": 3,
}


def _default_probe(probe: dict[str, Any] | None) -> None:
    if not probe:
        return
    for key, value in _PROBE_DEFAULTS.items():
        probe.setdefault(key, value)
    if "httpGet" in probe:
        probe["httpGet"].setdefault("path", "/")
        probe["httpGet"].setdefault("scheme", "HTTP")


def _default_container(container: dict[str, Any]) -> None:
    image = str(container.get("image", ""))
    tag = image.rsplit("/", 1)[-1]
    latest = "@" not in tag and (":" not in tag or tag.endswith(":latest"))
    container.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    container.setdefault("resources", {})
    for port in container.get("ports") or []:
        port.setdefault("protocol", "TCP")
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        _default_probe(container.get(probe))


def default_pod_spec(spec: dict[str, Any], restart_policy: str = "Always") -> None:
    spec.setdefault("restartPolicy", restart_policy)
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    for container in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        _default_container(container)


def drop_nulls(value: Any) -> Any:
    """What decoding into the API's Go types does: `null` is absent, and so are empty
    label and annotation maps."""
    if isinstance(value, dict):
        return {
            k: drop_nulls(v)
            for k, v in value.items()
            if v is not None and not (k in ("labels", "annotations") and v == {})
        }
    if isinstance(value, list):
        return [drop_nulls(v) for v in value]
    return value


def apply_defaults(res: Resource, obj: dict[str, Any]) -> None:
    """Fill in the defaults of `obj` in place (idempotent)."""
    spec = obj.get("spec")
    if res.kind == "Deployment" and isinstance(spec, dict):
        spec.setdefault("replicas", 1)
        strategy = spec.setdefault("strategy", {})
        strategy.setdefault("type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            rolling = strategy.setdefault("rollingUpdate", {})
            rolling.setdefault("maxUnavailable", "25%")
            rolling.setdefault("maxSurge", "25%")
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
    if res.kind in ("Deployment", "ReplicaSet", "Job") and isinstance(spec, dict):
        if res.kind == "ReplicaSet":
            spec.setdefault("replicas", 1)
        if res.kind == "Job":
            spec.setdefault("backoffLimit", 6)
            spec.setdefault("completions", 1)
            spec.setdefault("parallelism", 1)
        template = spec.get("template")
        if isinstance(template, dict):
            template.setdefault("metadata", {})
            default_pod_spec(template.setdefault("spec", {}))
    if res.kind == "Pod" and isinstance(spec, dict):
        default_pod_spec(spec)
    if res.kind == "Secret":
        obj.setdefault("type", "Opaque")
        string_data = obj.pop("stringData", None) or {}
        data = obj.setdefault("data", {})
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()
    if res.kind == "Namespace":
        obj.setdefault("spec", {"finalizers": ["kubernetes"]})
        obj.setdefault("status", {"phase": "Active"})
    if res.kind == "PersistentVolumeClaim" and isinstance(spec, dict):
        spec.setdefault("volumeMode", "Filesystem")


def validate(res: Resource, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
    """422 Invalid for what the real validation rejects among these fields."""
    meta = obj.get("metadata") or {}
    name = str(meta.get("name") or "")
    causes: list[tuple[str, str]] = []
    if not name:
        causes.append(("metadata.name", "Required value: name or generateName is required"))
    elif len(name) > 253 or not _NAME_RE.match(name):
        causes.append(
            (
                "metadata.name",
                f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of lower '
                "case alphanumeric characters, '-' or '.', and must start and end with an "
                "alphanumeric character",
            )
        )
    spec = obj.get("spec") or {}
    if res.kind in ("Deployment", "ReplicaSet"):
        selector = spec.get("selector")
        labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        if not selector:
            causes.append(("spec.selector", "Required value"))
        elif not selector_matches(selector, labels):
            causes.append(
                (
                    "spec.template.metadata.labels",
                    f"Invalid value: {labels}: `selector` does not match template `labels`",
                )
            )
        if old is not None and selector != (old.get("spec") or {}).get("selector"):
            causes.append(("spec.selector", f"Invalid value: {selector}: field is immutable"))
        if int(spec.get("replicas", 1)) < 0:
            causes.append(("spec.replicas", "Invalid value: must be greater than or equal to 0"))
    if res.kind in ("Deployment", "ReplicaSet", "Job"):
        pod_spec = (spec.get("template") or {}).get("spec") or {}
        causes += _containers(pod_spec, "spec.template.spec")
    if res.kind == "Pod":
        causes += _containers(spec, "spec")
    if res.kind == "Secret":
        for key, value in (obj.get("data") or {}).items():
            try:
                base64.b64decode(str(value), validate=True)
            except (binascii.Error, ValueError):
                causes.append((f"data[{key}]", "Invalid value: illegal base64 data"))
    if causes:
        raise invalid(res, name, causes)


def _containers(pod_spec: dict[str, Any], path: str) -> list[tuple[str, str]]:
    containers = pod_spec.get("containers") or []
    if not containers:
        return [(f"{path}.containers", "Required value")]
    causes = []
    for n, container in enumerate(containers):
        if not container.get("name"):
            causes.append((f"{path}.containers[{n}].name", "Required value"))
        if not container.get("image"):
            causes.append((f"{path}.containers[{n}].image", "Required value"))
    return causes


def label_job(job: dict[str, Any]) -> None:
    """What the API server adds to a new Job once it has a uid: a selector on that uid and
    the labels that match it on the pod template (unless `spec.manualSelector`)."""
    spec = job.get("spec") or {}
    if spec.get("manualSelector"):
        return
    uid, name = job["metadata"]["uid"], job["metadata"]["name"]
    labels = {
        "batch.kubernetes.io/controller-uid": uid,
        "batch.kubernetes.io/job-name": name,
        "controller-uid": uid,
        "job-name": name,
    }
    spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    template_meta = spec.setdefault("template", {}).setdefault("metadata", {})
    template_meta["labels"] = {**(template_meta.get("labels") or {}), **labels}
