"""TagResource, UntagResource and ListTagsForResource of the simulated ECS API.

Tags are key/value pairs on a resource ARN (clusters, services, task definitions, tasks),
given as `[{"key": ..., "value": ...}]`, at most 50 per resource, as the API reference
says; the ones CreateService and RegisterTaskDefinition were given are a resource's first.
"""

from __future__ import annotations

from typing import Any

from tests.ecs_sim.store import EcsError, Store

MAX_TAGS = 50


def _exists(store: Store, arn: str) -> bool:
    if any(s.arn == arn for s in store.services.values()):
        return True
    if any(d["taskDefinitionArn"] == arn for ds in store.families.values() for d in ds):
        return True
    if any(c.get("clusterArn") == arn for c in store.clusters.values()):
        return True
    return arn in store.tasks


def _resource(store: Store, req: dict[str, Any]) -> str:
    arn = str(req.get("resourceArn") or "")
    if not arn.startswith("arn:"):
        raise EcsError("InvalidParameterException", "Invalid resource ARN.")
    if not _exists(store, arn):
        raise EcsError("InvalidParameterException", "The specified resource is not found.")
    return arn


def initial_tags(store: Store, arn: str, given: list[dict[str, str]] | None) -> None:
    """The tags a create call was given, on the resource it made."""
    if given:
        store.tags[arn] = {t["key"]: t["value"] for t in given}


def tags_of(store: Store, arn: str) -> list[dict[str, str]]:
    return [{"key": k, "value": v} for k, v in store.tags.get(arn, {}).items()]


def tag_resource(store: Store, req: dict[str, Any]) -> dict[str, Any]:
    arn = _resource(store, req)
    given = req.get("tags") or []
    current = store.tags.setdefault(arn, {})
    merged = current | {str(t["key"]): str(t.get("value", "")) for t in given}
    if len(merged) > MAX_TAGS:
        raise EcsError("InvalidParameterException", f"A resource can have at most {MAX_TAGS} tags.")
    current.update(merged)
    return {}


def untag_resource(store: Store, req: dict[str, Any]) -> dict[str, Any]:
    arn = _resource(store, req)
    current = store.tags.setdefault(arn, {})
    for key in req.get("tagKeys") or []:
        current.pop(str(key), None)
    return {}


def list_tags_for_resource(store: Store, req: dict[str, Any]) -> dict[str, Any]:
    return {"tags": tags_of(store, _resource(store, req))}
