"""The ecs target's settings and pure parts: settings validation, the environment file's
aws section, the task-definition copy and comparison, and the verdict on a deployment read
from recorded DescribeServices answers (no simulator needed)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from blocks.env_file import load_environment_file
from blocks.errors import ConfigError
from blocks.rollout_ecs import EcsTargetSettings
from tasks.rollout.ecs_deployments import verdict
from tasks.rollout.ecs_preflight import ecr_repository, principal
from tasks.rollout.ecs_task_definitions import registrable, same, versions, with_version

ECR = "123456789012.dkr.ecr.eu-west-3.amazonaws.com"


def settings(**overrides: Any) -> EcsTargetSettings:
    data: dict[str, Any] = {
        "kind": "ecs",
        "cluster": "shop",
        "region": "eu-west-3",
        "services": ["api", {"name": "web", "containers": ["web"]}],
    }
    return EcsTargetSettings.model_validate(data | overrides)


# -- settings -------------------------------------------------------------------------------


def test_services_take_a_shorthand() -> None:
    found = settings()
    assert found.service_names == ["api", "web"]
    assert found.containers("api") == []
    assert found.containers("web") == ["web"]
    assert (found.rollout_timeout_seconds, found.keep_revisions, found.check_images) == (
        600.0,
        5,
        True,
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"services": ["api", "api"]}, "each ECS service once"),
        ({"services": []}, "each ECS service once"),
        ({"services": ["api/x"]}, "'api/x' is not an ECS service or container name"),
        ({"region": "Paris"}, "region 'Paris' is not an AWS region"),
        (
            {"health_checks": {"db": [{"kind": "tcp", "host": "x", "port": 1}]}},
            "health_checks for unknown services db",
        ),
        (
            {"health_checks": {"api": [{"kind": "container"}]}},
            "an ECS service's deployment is always waited for",
        ),
        (
            {"health_checks": {"api": [{"kind": "http", "url": "http://{host}:80/health"}]}},
            "is for ssh targets",
        ),
    ],
)
def test_bad_settings_get_one_line(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        settings(**overrides)
    assert "\n" not in str(raised.value)


ENV_FILE = """
name: production
database: {url: "postgresql://app@db:5432/app", password: "${DB_PASSWORD}"}
store: {url: s3://backups/prod}
target:
  kind: ecs
  cluster: shop
  region: eu-west-3
  services: [api, {name: web, containers: [web]}]
aws: {access_key_id: AKIAEXAMPLE, secret_access_key: "${AWS_SECRET}",
      role_arn: "arn:aws:iam::123456789012:role/deploy"}
"""


def test_an_environment_file_with_an_ecs_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DB_PASSWORD", "pg-secret")
    monkeypatch.setenv("AWS_SECRET", "aws-secret")
    path = tmp_path / "production.yaml"
    path.write_text(ENV_FILE)
    spec = load_environment_file(path)
    assert isinstance(spec.target, EcsTargetSettings)
    assert spec.aws is not None
    assert spec.aws.role_arn == "arn:aws:iam::123456789012:role/deploy"
    path.write_text(ENV_FILE.replace('"${AWS_SECRET}"', "plain-secret"))
    with pytest.raises(ConfigError, match=r"aws\.secret_access_key in .* is a literal secret"):
        load_environment_file(path)
    path.write_text(ENV_FILE.replace("kind: ecs", "kind: ecs\n  bogus: 1"))
    with pytest.raises(ConfigError, match=r"target\.ecs\.bogus"):
        load_environment_file(path)


# -- task definitions -----------------------------------------------------------------------


def described(image: str = f"{ECR}/api:v1", sidecar: str = "envoy:1.29") -> dict[str, Any]:
    """A task definition as DescribeTaskDefinition answers it (read-only fields included)."""
    return {
        "taskDefinitionArn": "arn:aws:ecs:eu-west-3:123456789012:task-definition/api:3",
        "family": "api",
        "revision": 3,
        "status": "ACTIVE",
        "networkMode": "awsvpc",
        "cpu": "256",
        "memory": "512",
        "executionRoleArn": "arn:aws:iam::123456789012:role/exec",
        "requiresCompatibilities": ["FARGATE"],
        "compatibilities": ["EC2", "FARGATE"],
        "requiresAttributes": [{"name": "com.amazonaws.ecs.capability.ecr-auth"}],
        "registeredAt": datetime(2026, 1, 2, tzinfo=UTC),
        "registeredBy": "arn:aws:iam::123456789012:user/ci",
        "containerDefinitions": [
            {"name": "api", "image": image, "essential": True, "environment": []},
            {"name": "envoy", "image": sidecar, "essential": False},
        ],
    }


def test_a_copy_keeps_every_registrable_field_and_only_the_named_tags_change() -> None:
    live = described()
    copy = registrable(with_version(live, ["api"], "v2"), [{"key": "team", "value": "shop"}])
    assert set(copy) == {
        "family",
        "networkMode",
        "cpu",
        "memory",
        "executionRoleArn",
        "requiresCompatibilities",
        "containerDefinitions",
        "tags",
    }
    assert [c["image"] for c in copy["containerDefinitions"]] == [f"{ECR}/api:v2", "envoy:1.29"]
    assert live["containerDefinitions"][0]["image"] == f"{ECR}/api:v1"  # not changed in place
    assert versions(live, ["api"]) == ["v1"]
    assert versions(live, []) == ["1.29", "v1"]  # all containers: two tags, mixed


def test_a_digest_is_replaced_by_the_tag_and_identical_copies_compare_equal() -> None:
    pinned = described(image=f"{ECR}/api@sha256:" + "a" * 64)
    copy = with_version(pinned, ["api"], "v2")
    assert copy["containerDefinitions"][0]["image"] == f"{ECR}/api:v2"
    other = described(image=f"{ECR}/api:v2")
    other["revision"], other["registeredAt"] = 9, datetime(2026, 3, 1, tzinfo=UTC)
    assert same(copy, other)  # read-only fields aside
    assert not same(copy, described(image=f"{ECR}/api:v3"))
    assert same(with_version(other, ["api"], "v2"), other)  # already there: nothing to do


def test_ecr_images_and_principals_are_recognised() -> None:
    assert ecr_repository(f"{ECR}/team/api:v2") == ("123456789012", "eu-west-3", "team/api")
    assert ecr_repository("localhost:5000/api:v2") is None
    assert ecr_repository("public.ecr.aws/nginx/nginx:1") is None
    assert (
        principal("arn:aws:sts::123456789012:assumed-role/deploy/slipway")
        == "arn:aws:iam::123456789012:role/deploy"
    )
    assert principal("arn:aws:iam::123456789012:user/ci") == "arn:aws:iam::123456789012:user/ci"


# -- the verdict on a deployment, from recorded DescribeServices answers ------------------

TD = "arn:aws:ecs:eu-west-3:123456789012:task-definition/api:"


def deployment(
    ident: str, status: str, state: str, rev: int, running: int = 2, **more: Any
) -> dict[str, Any]:
    return {
        "id": ident,
        "status": status,
        "rolloutState": state,
        "taskDefinition": f"{TD}{rev}",
        "desiredCount": 2,
        "runningCount": running,
        **more,
    }


def test_the_verdict_follows_our_deployment_not_the_steady_state() -> None:
    ours = "ecs-svc/222"
    going = {
        "deployments": [
            deployment(ours, "PRIMARY", "IN_PROGRESS", 4, running=1),
            deployment("ecs-svc/111", "ACTIVE", "COMPLETED", 3),
        ]
    }
    seen = verdict(going, ours)
    assert (seen.done, seen.failed) == (False, False)
    assert "IN_PROGRESS api:4, 1/2 running" in seen.detail

    done = {"deployments": [deployment(ours, "PRIMARY", "COMPLETED", 4)]}
    assert verdict(done, ours).done

    untracked = {"deployments": [deployment(ours, "PRIMARY", "COMPLETED", 4)]}
    del untracked["deployments"][0]["rolloutState"]  # services behind a Classic Load Balancer
    assert verdict(untracked, ours).done
    untracked["deployments"].append(deployment("ecs-svc/111", "ACTIVE", "COMPLETED", 3))
    assert not verdict(untracked, ours).done  # the old one still drains

    short = {"deployments": [deployment(ours, "PRIMARY", "COMPLETED", 4, running=1)]}
    assert not verdict(short, ours).done  # running below desired

    reason = "ECS deployment circuit breaker: tasks failed to start."
    failed = {"deployments": [deployment(ours, "PRIMARY", "FAILED", 4, rolloutStateReason=reason)]}
    seen = verdict(failed, ours)
    assert seen.failed
    assert seen.detail == f"deployment {ours} failed: {reason}"

    # The breaker rolled back: steady state (what services_stable accepts), ours gone.
    rolled_back = {"deployments": [deployment("ecs-svc/333", "PRIMARY", "COMPLETED", 3)]}
    seen = verdict(rolled_back, ours)
    assert seen.failed
    assert seen.detail == (
        f"the deployment circuit breaker rolled {ours} back: it is gone (the service is on api:3)"
    )
    replaced = {
        "deployments": [
            deployment("ecs-svc/333", "PRIMARY", "IN_PROGRESS", 3),
            deployment(ours, "ACTIVE", "IN_PROGRESS", 4),
        ]
    }
    assert "no longer PRIMARY" in verdict(replaced, ours).detail
