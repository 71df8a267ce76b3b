"""Authorisation as the simulator plays it: everything is allowed except the (verb,
resource) pairs a test forbids, which answer 403 Forbidden as RBAC does; and
SelfSubjectAccessReview (`kubectl auth can-i`, a preflight's "may I patch?") answers from
the same rules. The user name only appears in messages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tests.k8s_sim.resources import Resource
from tests.k8s_sim.store_errors import ApiError

GROUP, VERSION, PLURAL = "authorization.k8s.io", "v1", "selfsubjectaccessreviews"
REVIEW_PATH = f"/apis/{GROUP}/{VERSION}/{PLURAL}"


def resource_list() -> dict[str, Any]:
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{GROUP}/{VERSION}",
        "resources": [
            {
                "name": PLURAL,
                "singularName": "selfsubjectaccessreview",
                "namespaced": False,
                "kind": "SelfSubjectAccessReview",
                "verbs": ["create"],
            }
        ],
    }


def verb(method: str, name: str, query: dict[str, str]) -> str:
    """The RBAC verb of a request."""
    if method == "GET":
        if name:
            return "get"
        return "watch" if query.get("watch") in ("true", "1") else "list"
    return {
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if name else "deletecollection",
    }.get(method, method.lower())


@dataclass
class Access:
    user: str = "system:serviceaccount:default:slipway"
    # (verb, resource) pairs refused; resource as RBAC names it: "deployments",
    # "deployments/status", "secrets"; "*" matches any verb.
    forbidden: set[tuple[str, str]] = field(default_factory=set)

    def allowed(self, verb: str, resource: str) -> bool:
        return (verb, resource) not in self.forbidden and ("*", resource) not in self.forbidden

    def check(self, verb: str, res: Resource, sub: str, namespace: str | None, name: str) -> None:
        resource = f"{res.plural}/{sub}" if sub else res.plural
        if self.allowed(verb, resource):
            return
        what = f'{res.qualified} "{name}"' if name else res.qualified
        where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
        raise ApiError(
            403,
            "Forbidden",
            f'{what} is forbidden: User "{self.user}" cannot {verb} resource "{resource}" in '
            f'API group "{res.group}"{where}',
            {"name": name, "kind": res.plural, **({"group": res.group} if res.group else {})},
        )

    def review(self, body: dict[str, Any]) -> dict[str, Any]:
        """The answered SelfSubjectAccessReview."""
        attributes = (body.get("spec") or {}).get("resourceAttributes") or {}
        resource = str(attributes.get("resource", ""))
        if attributes.get("subresource"):
            resource += "/" + str(attributes["subresource"])
        allowed = self.allowed(str(attributes.get("verb", "")), resource)
        status: dict[str, Any] = {"allowed": allowed}  # RBAC gives no reason for a "no"
        return {
            "kind": "SelfSubjectAccessReview",
            "apiVersion": f"{GROUP}/{VERSION}",
            "metadata": {},
            "spec": body.get("spec") or {},
            "status": status,
        }
