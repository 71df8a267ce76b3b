"""Label selectors (the query string form and the LabelSelector object) and the field
selectors the simulator supports (`metadata.name`, `metadata.namespace`, `status.phase`)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from tests.k8s_sim.store_errors import bad_request

Matcher = Callable[[dict[str, Any]], bool]
_SET_RE = re.compile(r"^\s*(!?)\s*([A-Za-z0-9./_-]+)\s*(?:(notin|in)\s*\(([^)]*)\))?\s*$")
_EQ_RE = re.compile(r"^\s*([A-Za-z0-9./_-]+)\s*(==|=|!=)\s*([A-Za-z0-9._-]*)\s*$")


def _split(text: str) -> list[str]:
    """Split on the commas outside parentheses."""
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        depth += {"(": 1, ")": -1}.get(char, 0)
        current += char
    parts.append(current)
    return [p for p in parts if p.strip()]


def _requirement(text: str) -> Callable[[dict[str, str]], bool]:
    eq = _EQ_RE.match(text)
    if eq:
        key, op, value = eq.groups()
        if op == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    found = _SET_RE.match(text)
    if not found:
        raise bad_request(f"unable to parse requirement: {text.strip()!r}")
    negated, key, op, values_text = found.groups()
    if op is None:
        if negated:
            return lambda labels: key not in labels
        return lambda labels: key in labels
    if negated:
        raise bad_request(f"unable to parse requirement: {text.strip()!r}")
    values = {v.strip() for v in values_text.split(",") if v.strip()}
    if op == "in":
        return lambda labels: labels.get(key) in values
    return lambda labels: labels.get(key) not in values


def parse_label_selector(text: str) -> Callable[[dict[str, str]], bool]:
    """A predicate on a label map from the `labelSelector` query parameter."""
    requirements = [_requirement(part) for part in _split(text)]
    return lambda labels: all(req(labels) for req in requirements)


def selector_matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """Whether labels match a LabelSelector object (matchLabels and matchExpressions).

    An empty selector matches everything, a missing one nothing, as for workloads."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], set(expr.get("values") or [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }.get(op)
        if not ok:
            return False
    return True


def selector_string(selector: dict[str, Any]) -> str:
    """The string form of a LabelSelector (as Scale's status.selector shows it)."""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op = expr["key"], expr["operator"]
        values = ",".join(sorted(expr.get("values") or []))
        parts.append(
            {"In": f"{key} in ({values})", "NotIn": f"{key} notin ({values})"}.get(
                op, key if op == "Exists" else f"!{key}"
            )
        )
    return ",".join(parts)


_FIELDS: dict[str, Callable[[dict[str, Any]], str]] = {
    "metadata.name": lambda o: str(o["metadata"].get("name", "")),
    "metadata.namespace": lambda o: str(o["metadata"].get("namespace", "")),
    "status.phase": lambda o: str((o.get("status") or {}).get("phase", "")),
    "spec.nodeName": lambda o: str((o.get("spec") or {}).get("nodeName", "")),
}


def parse_field_selector(text: str) -> Matcher:
    """A predicate on an object from the `fieldSelector` query parameter."""
    checks: list[Matcher] = []
    for part in _split(text):
        found = _EQ_RE.match(part)
        if not found or found.group(1) not in _FIELDS:
            raise bad_request(f'field label not supported: "{part.split("=")[0].strip("!")}"')
        field, op, value = found.groups()
        checks.append(_field_check(_FIELDS[field], op == "!=", value))
    return lambda obj: all(check(obj) for check in checks)


def _field_check(read: Callable[[dict[str, Any]], str], negated: bool, value: str) -> Matcher:
    return lambda obj: (read(obj) == value) != negated


def query_matcher(label_selector: str, field_selector: str) -> Matcher:
    """One predicate for a list or watch request's two selectors."""
    labels = parse_label_selector(label_selector) if label_selector else None
    fields = parse_field_selector(field_selector) if field_selector else None

    def matches(obj: dict[str, Any]) -> bool:
        if labels and not labels(obj["metadata"].get("labels") or {}):
            return False
        return not (fields and not fields(obj))

    return matches
