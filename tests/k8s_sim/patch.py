"""The three patch kinds of the API server, applied to an object's JSON form.

- `application/json-patch+json`: RFC 6902 (the `jsonpatch` library);
- `application/merge-patch+json`: RFC 7386 (maps merge, `null` deletes, lists replace);
- `application/strategic-merge-patch+json`: Kubernetes' strategic merge, with the merge keys
  the API types declare for the fields the simulator's resources have (containers, env,
  ports, volumes, volumeMounts, conditions, ownerReferences...), the directives `$patch`
  (`delete`, `replace`, `merge`), `$retainKeys`, `$deleteFromPrimitiveList/<key>` and
  `$setElementOrder/<key>`, and `null` deleting a key. Lists without a merge key replace.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonpatch

from tests.k8s_sim.store_errors import ApiError, bad_request

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH)

# patchMergeKey of the list fields that have patchStrategy "merge", by field name.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "ownerReferences": "uid",
    "conditions": "type",
    "topologySpreadConstraints": "topologyKey",
}
PRIMITIVE_MERGE = {"finalizers"}  # lists of strings merged as sets


def _merge_key(field: str, items: list[Any]) -> str | None:
    if field == "ports":
        # Container ports merge on containerPort, Service ports on port.
        sample = next((i for i in items if isinstance(i, dict)), {})
        return "containerPort" if "containerPort" in sample or not sample else "port"
    return MERGE_KEYS.get(field)


def apply_patch(content_type: str, original: dict[str, Any], body: bytes) -> dict[str, Any]:
    """The patched copy of `original`; ApiError for a bad patch."""
    kind = content_type.split(";")[0].strip()
    if kind not in PATCH_TYPES:
        raise ApiError(
            415,
            "UnsupportedMediaType",
            f"the body of the request was in an unknown format - accepted media types include: "
            f"{', '.join(PATCH_TYPES)}",
        )
    try:
        patch = json.loads(body or b"null")
    except json.JSONDecodeError as exc:
        raise bad_request(f"error decoding patch: {exc}") from None
    if kind == JSON_PATCH:
        if not isinstance(patch, list):
            raise bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
        try:
            result = jsonpatch.JsonPatch(patch).apply(copy.deepcopy(original))
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
            raise ApiError(422, "Invalid", f"the server rejected our request: {exc}") from None
        if not isinstance(result, dict):
            raise ApiError(422, "Invalid", "the patched object is not an object")
        return result
    if not isinstance(patch, dict):
        raise bad_request("the patch is not a JSON object")
    if kind == MERGE_PATCH:
        merged = merge_patch(original, patch)
    else:
        merged = strategic_merge(original, patch)
    assert isinstance(merged, dict)
    return merged


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON Merge Patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge(original: Any, patch: dict[str, Any]) -> Any:
    """Kubernetes strategic merge of a map `patch` into `original`."""
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return None
    if directive not in (None, "merge"):
        raise bad_request(f"Unknown patch type: {directive}")
    result = copy.deepcopy(original) if isinstance(original, dict) else {}
    retain = patch.get("$retainKeys")
    orders = {k.split("/", 1)[1]: v for k, v in patch.items() if k.startswith("$setElementOrder/")}
    for key, value in patch.items():
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            result[field] = [v for v in result.get(field) or [] if v not in value]
            continue
        if key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            merged = strategic_merge(result.get(key), value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list):
            result[key] = _merge_list(key, result.get(key), value)
        else:
            result[key] = value
    for field, order in orders.items():
        if isinstance(result.get(field), list):
            result[field] = _reorder(field, result[field], order)
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain or k in patch}
    return result


def _merge_list(field: str, original: Any, patch: list[Any]) -> list[Any]:
    current = copy.deepcopy(original) if isinstance(original, list) else []
    if any(isinstance(i, dict) and i.get("$patch") == "replace" for i in patch):
        return [copy.deepcopy(i) for i in patch if not (isinstance(i, dict) and "$patch" in i)]
    if field in PRIMITIVE_MERGE:
        return current + [v for v in patch if v not in current]
    key = _merge_key(field, current + patch)
    if key is None or not all(isinstance(i, dict) for i in patch):
        return [copy.deepcopy(i) for i in patch]
    for item in patch:
        if key not in item:
            raise bad_request(f"map: {item} does not contain declared merge key: {key}")
        index = next(
            (
                n
                for n, cur in enumerate(current)
                if isinstance(cur, dict) and cur.get(key) == item[key]
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if index is not None:
                del current[index]
            continue
        if index is None:
            current.append(strategic_merge({}, item))
        else:
            current[index] = strategic_merge(current[index], item)
    return current


def _reorder(field: str, items: list[Any], order: list[Any]) -> list[Any]:
    """Items in `$setElementOrder` order, the others after them in their order."""
    key = _merge_key(field, items)
    if key is None:
        return items
    ident = [o.get(key) if isinstance(o, dict) else o for o in order]
    ranked = [i for i in items if isinstance(i, dict) and i.get(key) in ident]
    ranked.sort(key=lambda i: ident.index(i.get(key)))
    return ranked + [i for i in items if i not in ranked]
