"""Task definitions of an ecs target: the live one copied with new image tags, reused when
an identical revision exists, and old revisions deregistered keeping the newest.

The copy is the live revision's registrable fields (what `RegisterTaskDefinition` accepts,
read from botocore's model of the API, so a field AWS adds is kept too) with only the named
containers' image tags changed: never a file that can drift from what runs. Registering
only when no ACTIVE revision of the family already is that copy keeps a family from growing
on every release (prefect #16485).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterable
from typing import Any

from blocks.errors import SlipwayError
from tasks.rollout.ecs_api import AwsApi
from tasks.rollout.kube_status import image_tag, with_tag

# Revisions of a family compared, newest first, when looking for an identical one.
SEARCH_DEPTH = 50


@functools.cache
def registrable_fields() -> frozenset[str]:
    """What `RegisterTaskDefinition` accepts, from botocore's model of the ECS API."""
    from botocore.session import get_session

    shape = get_session().get_service_model("ecs").operation_model("RegisterTaskDefinition")
    assert shape.input_shape is not None  # the operation takes arguments
    return frozenset(shape.input_shape.members)


def registrable(
    definition: dict[str, Any], tags: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    """A described task definition as `RegisterTaskDefinition` arguments: the read-only
    fields (ARN, revision, status, requiresAttributes, compatibilities, registeredAt...)
    dropped."""
    fields = registrable_fields()
    found = {k: copy.deepcopy(v) for k, v in definition.items() if k in fields and k != "tags"}
    if tags:
        found["tags"] = copy.deepcopy(tags)
    return found


def chosen(definition: dict[str, Any], containers: Iterable[str]) -> list[dict[str, Any]]:
    """The container definitions named (all when none are), in the definition's order."""
    names = set(containers)
    return [c for c in definition["containerDefinitions"] if not names or c["name"] in names]


def missing_containers(definition: dict[str, Any], containers: Iterable[str]) -> list[str]:
    have = {c["name"] for c in definition["containerDefinitions"]}
    return sorted(set(containers) - have)


def versions(definition: dict[str, Any], containers: Iterable[str]) -> list[str]:
    """The image tags of the named containers, sorted, once each."""
    return sorted({image_tag(c["image"]) for c in chosen(definition, containers)})


def with_version(
    definition: dict[str, Any], containers: Iterable[str], version: str
) -> dict[str, Any]:
    """A copy with the named containers' image at tag `version` (repository kept, a digest
    replaced by the tag); everything else as it is."""
    found = copy.deepcopy(definition)
    for container in chosen(found, containers):
        container["image"] = with_tag(container["image"], version)
    return found


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two task definitions register the same thing (tags aside)."""
    return registrable(a) == registrable(b)


def name(arn: str) -> str:
    """`family:revision` of a task definition ARN (or of that text itself)."""
    return arn.rsplit("/", 1)[-1]


def family_of(arn: str) -> str:
    return name(arn).rsplit(":", 1)[0]


def revision_of(arn: str) -> int:
    try:
        return int(name(arn).rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return 0


class TaskDefinitions:
    """The ECS task definitions an ecs target reads, registers and deregisters."""

    def __init__(self, api: AwsApi) -> None:
        self.api = api
        self._described: dict[str, dict[str, Any]] = {}  # by ARN: a revision never changes

    def describe(self, arn: str) -> dict[str, Any]:
        if arn not in self._described:
            answer = self.api.ecs("DescribeTaskDefinition", taskDefinition=arn, include=["TAGS"])
            found = dict(answer["taskDefinition"])
            found["tags"] = answer.get("tags") or []
            self._described[arn] = found
            self._described[found["taskDefinitionArn"]] = found
        return self._described[arn]

    def for_version(self, live: str, containers: list[str], version: str) -> tuple[str, str]:
        """The ARN of a revision like `live` at `version`, and what was done to have it:
        nothing (live already is), an identical one reused, or a new one registered."""
        current = self.describe(live)
        missing = missing_containers(current, containers)
        if missing:
            raise SlipwayError(
                f"task definition {name(live)} has no container {', '.join(missing)}: fix "
                "the service's containers"
            )
        wanted = with_version(current, containers, version)
        if same(wanted, current):
            return current["taskDefinitionArn"], f"already on {name(live)}"
        for arn in self.active(current["family"])[:SEARCH_DEPTH]:
            if same(wanted, self.describe(arn)):
                return arn, f"reused {name(arn)}"
        answer = self.api.ecs("RegisterTaskDefinition", **registrable(wanted, current.get("tags")))
        arn = answer["taskDefinition"]["taskDefinitionArn"]
        return arn, f"registered {name(arn)}"

    def active(self, family: str) -> list[str]:
        """The family's ACTIVE revisions, newest first."""
        arns: list[str] = []
        token = None
        while True:
            extra: dict[str, str] = {"nextToken": token} if token else {}
            answer = self.api.ecs(
                "ListTaskDefinitions",
                familyPrefix=family,
                status="ACTIVE",
                sort="DESC",
                **extra,
            )
            # familyPrefix is a prefix: "api" also lists "api-worker".
            arns += [a for a in answer.get("taskDefinitionArns", []) if family_of(a) == family]
            token = answer.get("nextToken")
            if not token:
                return sorted(arns, key=revision_of, reverse=True)

    def prune(self, family: str, keep: int, in_use: set[str]) -> list[str]:
        """Deregister the family's ACTIVE revisions beyond the newest `keep`, never one in
        `in_use` (ARNs); what was deregistered."""
        dropped = []
        for arn in self.active(family)[keep:]:
            if arn in in_use:
                continue
            self.api.ecs("DeregisterTaskDefinition", taskDefinition=arn)
            dropped.append(f"deregistered task definition {name(arn)}")
        return dropped
