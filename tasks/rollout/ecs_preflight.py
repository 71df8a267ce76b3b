"""An ecs target's preflight: credentials, cluster, services, images, permissions.

Read-only calls, each failing as one line: STS `GetCallerIdentity` through the target's own
session, `DescribeClusters` and `DescribeServices` (missing or not ACTIVE), the live task
definitions (the named containers exist), ECR `DescribeImages` for the version's images
that live in an ECR repository (others are noted as not checked), and, where the caller may
ask IAM, a simulation of the write actions a release needs.
"""

from __future__ import annotations

import re
from typing import Any

from blocks.errors import SlipwayError
from blocks.text import one_line
from tasks.rollout.ecs_api import AwsApi
from tasks.rollout.ecs_deployments import primary
from tasks.rollout.ecs_task_definitions import TaskDefinitions, chosen, missing_containers, name
from tasks.rollout.kube_status import image_tag, with_tag

ECR_IMAGE = re.compile(
    r"(?P<account>\d{12})\.dkr\.ecr(-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(\.cn)?"
    r"/(?P<repository>[^:@]+)"
)
# What a release writes: checked by IAM's policy simulator where the caller may use it.
TASK_DEFINITION_WRITES = ("ecs:RegisterTaskDefinition", "ecs:DeregisterTaskDefinition")
ASSUMED = re.compile(r"arn:(?P<part>[^:]+):sts::(?P<account>\d+):assumed-role/(?P<role>[^/]+)/.*")


def ecr_repository(image: str) -> tuple[str, str, str] | None:
    """(account, region, repository) of an ECR image reference, else None."""
    found = ECR_IMAGE.fullmatch(image.split("@", 1)[0].rsplit(":", 1)[0])
    if found is None:
        return None
    return found["account"], found["region"], found["repository"]


def principal(arn: str) -> str:
    """The IAM principal behind a caller identity (an assumed role's session: the role)."""
    found = ASSUMED.fullmatch(arn)
    if found is None:
        return arn
    return f"arn:{found['part']}:iam::{found['account']}:role/{found['role']}"


def check(api: AwsApi, definitions: TaskDefinitions, version: str | None) -> list[str]:
    """What was checked, one line each; raises a one-line `SlipwayError` at the first problem."""
    settings = api.settings
    identity = api.request("sts", "GetCallerIdentity")
    checks = [f"credentials: {identity.get('Arn')}"]
    cluster = settings.cluster
    answer = api.ecs("DescribeClusters", clusters=[cluster])
    found = [c for c in answer.get("clusters", []) if c.get("status") == "ACTIVE"]
    if not found:
        reason = (answer.get("failures") or [{}])[0].get("reason") or "MISSING"
        state = "not found" if reason == "MISSING" else f"not usable ({reason})"
        raise SlipwayError(
            f"cluster {cluster} {state} in {settings.region}: check cluster and region"
        )
    checks.append(f"cluster {cluster} is ACTIVE")
    names = settings.service_names
    services: dict[str, dict[str, Any]] = {}
    for start in range(0, len(names), 10):  # DescribeServices takes at most 10
        answer = api.ecs("DescribeServices", cluster=cluster, services=names[start : start + 10])
        services |= {s["serviceName"]: s for s in answer.get("services", [])}
    for service in names:
        described = services.get(service)
        if described is None:
            raise SlipwayError(
                f"service {service} not found in cluster {cluster}: check services (or create it)"
            )
        if described.get("status") != "ACTIVE":
            raise SlipwayError(
                f"service {service} in cluster {cluster} is {described.get('status')}: "
                "check services"
            )
        controller = (described.get("deploymentController") or {}).get("type", "ECS")
        if controller != "ECS":
            raise SlipwayError(
                f"service {service} is deployed by {controller}, not ECS's rolling update: "
                "Slipway follows ECS deployments only"
            )
        checks += _images(api, definitions, described, version)
    roles = {
        str(d[key])
        for s in services.values()
        for d in [definitions.describe(str((primary(s) or s)["taskDefinition"]))]
        for key in ("taskRoleArn", "executionRoleArn")
        if d.get(key)
    }
    writes = {
        TASK_DEFINITION_WRITES: ["*"],
        ("ecs:UpdateService",): [str(s["serviceArn"]) for s in services.values()],
        ("iam:PassRole",): sorted(roles),  # registering a revision that names roles
    }
    if not settings.check_permissions:
        return [*checks, "write permissions not checked (check_permissions is false)"]
    return checks + _permissions(api, str(identity.get("Arn", "")), writes)


def _images(
    api: AwsApi, definitions: TaskDefinitions, service: dict[str, Any], version: str | None
) -> list[str]:
    name_ = service["serviceName"]
    live = primary(service)
    arn = str((live or service)["taskDefinition"])
    definition = definitions.describe(arn)
    containers = api.settings.containers(name_)
    missing = missing_containers(definition, containers)
    if missing:
        raise SlipwayError(
            f"service {name_}'s task definition {name(arn)} has no container "
            f"{', '.join(missing)}: fix the target's containers"
        )
    checks = [f"service {name_} is ACTIVE on {name(arn)}"]
    if version is None or not api.settings.check_images:
        return checks
    for container in chosen(definition, containers):
        image = with_tag(container["image"], version)
        where = ecr_repository(image)
        if where is None:
            checks.append(f"image {image}: not in ECR, not checked")
            continue
        account, _, repository = where
        try:
            api.request(
                "ecr",
                "DescribeImages",
                registryId=account,
                repositoryName=repository,
                imageIds=[{"imageTag": image_tag(image)}],
            )
        except SlipwayError as exc:
            cause = getattr(exc.__cause__, "response", {}).get("Error", {}).get("Code")
            if cause in ("ImageNotFoundException", "RepositoryNotFoundException"):
                what = "image" if cause == "ImageNotFoundException" else "repository"
                raise SlipwayError(
                    f"image {image} of service {name_}: {what} not found in ECR: push "
                    f"{repository}:{version} first"
                ) from exc
            raise
        checks.append(f"image {image} exists")
    return checks


def _permissions(api: AwsApi, caller: str, writes: dict[tuple[str, ...], list[str]]) -> list[str]:
    """The write actions IAM's policy simulator denies on their resources, as an error; a
    note when the caller may not simulate (the read calls above proved their own)."""
    denied = []
    for actions, resources in writes.items():
        if not resources:
            continue
        try:
            answer = api.request(
                "iam",
                "SimulatePrincipalPolicy",
                PolicySourceArn=principal(caller),
                ActionNames=list(actions),
                ResourceArns=resources,
            )
        except SlipwayError as exc:
            return [one_line(f"write permissions not checked: {exc}", 300)]
        denied += [
            f"{r['EvalActionName']} on {r.get('EvalResourceName', '*')}"
            for r in answer.get("EvaluationResults", [])
            if r.get("EvalDecision") != "allowed"
        ]
    if denied:
        raise SlipwayError(
            f"IAM's policy simulator says Slipway's credentials ({caller}) may not "
            f"{', '.join(denied)}: allow them in their IAM policy"
        )
    return ["write permissions: IAM's policy simulator allows them"]
