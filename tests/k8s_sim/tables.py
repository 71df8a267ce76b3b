"""Server-side printing: the `meta.k8s.io/v1` Table kubectl asks for (`Accept: ...;as=Table`)
so that `kubectl get` shows the usual columns (READY, UP-TO-DATE, STATUS, RESTARTS, AGE...)."""

from __future__ import annotations

import calendar
import time
from collections.abc import Callable
from typing import Any

from tests.k8s_sim.resources import Resource

Cell = Callable[[dict[str, Any]], Any]


def _age(obj: dict[str, Any]) -> str:
    stamp = obj["metadata"].get("creationTimestamp")
    if not stamp:
        return "<unknown>"
    seconds = int(time.time() - calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def _status(obj: dict[str, Any], field: str) -> int:
    return int((obj.get("status") or {}).get(field, 0))


def _pod_status(pod: dict[str, Any]) -> str:
    status = pod.get("status") or {}
    for container in status.get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason"):
            return str(waiting["reason"])
    return str(status.get("phase", "Pending"))


def _pod_ready(pod: dict[str, Any]) -> str:
    containers = (pod.get("status") or {}).get("containerStatuses") or []
    total = len(pod["spec"].get("containers") or [])
    return f"{sum(1 for c in containers if c.get('ready'))}/{total}"


def _images(obj: dict[str, Any]) -> str:
    containers = obj["spec"]["template"]["spec"].get("containers") or []
    return ",".join(str(c.get("image", "")) for c in containers)


COLUMNS: dict[str, list[tuple[str, Cell]]] = {
    "Deployment": [
        ("Ready", lambda o: f"{_status(o, 'readyReplicas')}/{o['spec'].get('replicas', 1)}"),
        ("Up-to-date", lambda o: _status(o, "updatedReplicas")),
        ("Available", lambda o: _status(o, "availableReplicas")),
    ],
    "ReplicaSet": [
        ("Desired", lambda o: o["spec"].get("replicas", 1)),
        ("Current", lambda o: _status(o, "replicas")),
        ("Ready", lambda o: _status(o, "readyReplicas")),
    ],
    "Pod": [
        ("Ready", _pod_ready),
        ("Status", _pod_status),
        (
            "Restarts",
            lambda o: sum(
                c.get("restartCount", 0)
                for c in (o.get("status") or {}).get("containerStatuses") or []
            ),
        ),
    ],
    "ConfigMap": [("Data", lambda o: len(o.get("data") or {}))],
    "Secret": [("Type", lambda o: o.get("type", "")), ("Data", lambda o: len(o.get("data") or {}))],
    "PersistentVolumeClaim": [("Status", lambda o: (o.get("status") or {}).get("phase", ""))],
    "Namespace": [("Status", lambda o: (o.get("status") or {}).get("phase", ""))],
}
WIDE: dict[str, list[tuple[str, Cell]]] = {
    "Deployment": [("Images", _images)],
    "ReplicaSet": [("Images", _images)],
    "Pod": [("IP", lambda o: (o.get("status") or {}).get("podIP", "<none>"))],
}


def wants_table(accept: str) -> bool:
    return "as=Table" in accept


def table(res: Resource, items: list[dict[str, Any]], rv: str) -> dict[str, Any]:
    """The Table of `items` (one object or a list's items)."""
    columns: list[tuple[str, Cell, int]] = [("Name", lambda o: o["metadata"]["name"], 0)]
    columns += [(name, cell, 0) for name, cell in COLUMNS.get(res.kind, [])]
    columns.append(("Age", _age, 0))
    columns += [(name, cell, 1) for name, cell in WIDE.get(res.kind, [])]
    definitions = [
        {
            "name": name,
            "type": "integer"
            if name in ("Up-to-date", "Available", "Desired", "Current", "Restarts", "Data")
            else "string",
            "format": "name" if name == "Name" else "",
            "description": "",
            "priority": priority,
        }
        for name, _, priority in columns
    ]
    rows = [
        {
            "cells": [cell(item) for _, cell, _ in columns],
            "object": {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": item["metadata"],
            },
        }
        for item in items
    ]
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv},
        "columnDefinitions": definitions,
        "rows": rows,
    }
