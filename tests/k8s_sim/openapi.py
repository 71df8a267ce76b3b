"""Minimal OpenAPI v3 documents: only what kubectl reads before `create`/`apply`/`patch`
to learn that the server validates fields itself (a PATCH operation per kind with the
`fieldValidation` query parameter). No schemas: kubectl then sends `fieldValidation` and
uses its built-in types for strategic merge patches."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from tests.k8s_sim.resources import RESOURCES


def _prefix(group: str, version: str) -> str:
    return f"api/{version}" if not group else f"apis/{group}/{version}"


def root() -> dict[str, Any]:
    versions = sorted({(r.group, r.version) for r in RESOURCES})
    paths = {}
    for group, version in versions:
        prefix = _prefix(group, version)
        digest = hashlib.sha256(json.dumps(document(prefix)).encode()).hexdigest()[:16].upper()
        paths[prefix] = {"serverRelativeURL": f"/openapi/v3/{prefix}?hash={digest}"}
    return {"paths": paths}


def document(prefix: str) -> dict[str, Any] | None:
    """The OpenAPI v3 document of one group-version (`apis/apps/v1`), or None."""
    found = [r for r in RESOURCES if _prefix(r.group, r.version) == prefix]
    if not found:
        return None
    paths: dict[str, Any] = {}
    for r in found:
        gvk = {"group": r.group, "version": r.version, "kind": r.kind}
        scope = f"/namespaces/{{namespace}}/{r.plural}" if r.namespaced else f"/{r.plural}"
        param = {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}
        operation = {
            "operationId": f"patch{r.kind}",
            "parameters": [param],
            "responses": {"200": {"description": "OK"}},
            "x-kubernetes-action": "patch",
            "x-kubernetes-group-version-kind": gvk,
        }
        paths[f"/{prefix}{scope}/{{name}}"] = {"patch": operation}
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (simulator)", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": {}},
    }
