"""What a request path names: a discovery document or a resource (with namespace, name and
subresource), and the list and Scale bodies the verbs answer with."""

from __future__ import annotations

from typing import Any

from tests.k8s_sim import access, openapi, resources
from tests.k8s_sim.resources import BY_PATH, Resource
from tests.k8s_sim.selectors import selector_string
from tests.k8s_sim.store_errors import ApiError

NOT_FOUND = ApiError(404, "NotFound", "the server could not find the requested resource")


class Route:
    """What a resource path names."""

    def __init__(self, res: Resource, namespace: str | None, name: str, sub: str) -> None:
        self.res, self.namespace, self.name, self.sub = res, namespace, name, sub


def route(path: str) -> Route | dict[str, Any] | None:
    """A discovery document, a resource route, or None (404)."""
    parts = [p for p in path.split("/") if p]
    if parts == ["version"]:
        return resources.SERVER_VERSION
    if parts == ["api"]:
        return resources.core_versions()
    if parts == ["apis"]:
        return resources.group_list()
    if parts == ["openapi", "v3"]:
        return openapi.root()
    if parts[:2] == ["openapi", "v3"]:
        return openapi.document("/".join(parts[2:]))
    if parts == ["apis", access.GROUP, access.VERSION]:
        return access.resource_list()
    if parts[:1] == ["api"] and len(parts) >= 2:
        group, version, rest = "", parts[1], parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 2:
        if len(parts) == 2:
            return resources.group(parts[1])
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    if not rest:
        if (group, version) in {(r.group, r.version) for r in resources.RESOURCES}:
            return resources.resource_list(group, version)
        return None
    namespace: str | None = None
    if rest[0] == "namespaces" and len(rest) >= 3 and group + "/" + rest[2] in _NAMESPACED:
        namespace, rest = rest[1], rest[2:]
    res = BY_PATH.get((group, version, rest[0]))
    if res is None or len(rest) > 3 or (res.namespaced and namespace is None and len(rest) > 1):
        return None
    sub = rest[2] if len(rest) == 3 else ""
    if sub and sub not in res.subresources:
        return None
    return Route(res, namespace, rest[1] if len(rest) >= 2 else "", sub)


_NAMESPACED = {f"{r.group}/{r.plural}" for r in resources.RESOURCES if r.namespaced}


def list_body(res: Resource, items: list[dict[str, Any]], rv: int) -> dict[str, Any]:
    for item in items:  # typed lists carry no kind/apiVersion per item
        item.pop("kind", None)
        item.pop("apiVersion", None)
    return {
        "kind": f"{res.kind}List",
        "apiVersion": res.api_version,
        "metadata": {"resourceVersion": str(rv)},
        "items": items,
    }


def scale_of(obj: dict[str, Any]) -> dict[str, Any]:
    """The autoscaling/v1 Scale of a Deployment or ReplicaSet."""
    meta = obj["metadata"]
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if k in meta
        },
        "spec": {"replicas": obj["spec"].get("replicas", 1)},
        "status": {
            "replicas": (obj.get("status") or {}).get("replicas", 0),
            "selector": selector_string(obj["spec"].get("selector") or {}),
        },
    }
