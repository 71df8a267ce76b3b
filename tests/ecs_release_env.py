"""An environment of the demo app on the ECS simulator, tasks as real containers.

Two ECS services, api and web, each its own task-definition family, run the demo images of
tests/compose_app.py under ECR names (`123456789012.dkr.ecr.eu-west-3.amazonaws.com/
slipway-demo/api:v1`), which the simulator pulls from the harness's registry; moto's ECR
holds the same tags (v1 to v3), so preflight finds them there. Each container has a health
check (api `/health`, which v3 lacks: its tasks turn unhealthy and the circuit breaker rolls
it back). The AWS credentials are an `AwsCredentials` block whose endpoint is moto (STS,
ECR); the target's ECS endpoint is the simulator. The database, store and Environment
blocks are saved on the current Prefect API, with each version's Prisma migrations.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tests.compose_app import image, version_answered
from tests.ecs_app import ECR, REGION
from tests.ecs_sim import EcsSimulator
from tests.harness.postgres import PostgresInfo
from tests.harness.s3 import S3Info
from tests.pg_fixtures import create_database
from tests.release_env import save_environment_blocks, write_migrations

SERVICES = ("api", "web")
PROBES = {"api": "/health", "web": "/"}
IN_ECR = ("v1", "v2", "v3")  # v9 is in no repository: preflight stops its release
HEALTH = {
    "api": "wget -q -O /dev/null http://127.0.0.1:8080/health || exit 1",
    "web": "wget -q -O /dev/null http://127.0.0.1:8080/ || exit 1",
}


def ecr_image(service: str, version: str) -> str:
    return image(service, version, ECR)


def push_to_moto_ecr(moto_url: str, versions: tuple[str, ...] = IN_ECR) -> None:
    """The demo repositories in moto's ECR, with a manifest per tag (no layers: only the
    tags matter to DescribeImages)."""
    import boto3

    ecr = boto3.client(
        "ecr",
        region_name=REGION,
        endpoint_url=moto_url,
        aws_access_key_id="AKIAEXAMPLETESTING00",
        aws_secret_access_key="moto-secret",  # noqa: S106 - moto's, not a secret
    )
    for service in SERVICES:
        repository = image(service, "v1").rsplit(":", 1)[0]
        # moto keeps one state per process: another module's server may have made it.
        with contextlib.suppress(ecr.exceptions.RepositoryAlreadyExistsException):
            ecr.create_repository(repositoryName=repository)
        for version in versions:
            digest = hashlib.sha256(f"{service}:{version}".encode()).hexdigest()
            manifest = {
                "schemaVersion": 2,
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {
                    "mediaType": "application/vnd.docker.container.image.v1+json",
                    "size": 2,
                    "digest": f"sha256:{digest}",
                },
                "layers": [],
            }
            with contextlib.suppress(ecr.exceptions.ImageAlreadyExistsException):
                ecr.put_image(
                    repositoryName=repository, imageManifest=json.dumps(manifest), imageTag=version
                )


def task_definition(service: str) -> dict[str, Any]:
    return {
        "containerDefinitions": [
            {
                "name": service,
                "image": ecr_image(service, "v1"),
                "essential": True,
                "portMappings": [{"containerPort": 8080}],
                "healthCheck": {
                    "command": ["CMD-SHELL", HEALTH[service]],
                    "interval": 5,
                    "retries": 2,
                },
            }
        ],
        "networkMode": "awsvpc",
        "cpu": "256",
        "memory": "512",
        "requiresCompatibilities": ["FARGATE"],
    }


@dataclass
class EcsRelease:
    """The environment `name` and how tests read the cluster from outside Slipway."""

    name: str
    sim: EcsSimulator
    cluster: str
    database: str

    def service(self, service: str) -> str:
        return f"{self.cluster}-{service}"

    def url(self, service: str) -> str:
        return self.sim.service_url(self.service(service), cluster=self.cluster)

    def answers(self) -> dict[str, str | None]:
        """The version each service's tasks answer through its stable URL."""
        return {s: self.answer(s) for s in SERVICES}

    def answer(self, service: str) -> str | None:
        return version_answered(self.url(service), PROBES[service])

    def described(self, service: str) -> dict[str, Any]:
        found = self.sim.client().describe_services(
            cluster=self.cluster, services=[self.service(service)]
        )
        return dict(found["services"][0])

    def primary_versions(self) -> dict[str, str]:
        """The image tag of each service's PRIMARY deployment's task definition."""
        versions = {}
        for service in SERVICES:
            primary = next(
                d for d in self.described(service)["deployments"] if d["status"] == "PRIMARY"
            )
            definition = self.sim.client().describe_task_definition(
                taskDefinition=primary["taskDefinition"]
            )["taskDefinition"]
            versions[service] = definition["containerDefinitions"][0]["image"].rsplit(":", 1)[1]
        return versions

    def revisions(
        self, service: str, status: Literal["ACTIVE", "INACTIVE"] = "ACTIVE"
    ) -> list[int]:
        """The family's revisions in `status` (ACTIVE or INACTIVE)."""
        family = self.service(service)
        arns = self.sim.client().list_task_definitions(familyPrefix=family, status=status)
        return sorted(
            int(arn.rsplit(":", 1)[1])
            for arn in arns["taskDefinitionArns"]
            if arn.rsplit("/", 1)[1].rsplit(":", 1)[0] == family
        )


def save_ecs_release_environment(
    root: Path,
    sim: EcsSimulator,
    postgres: PostgresInfo,
    s3: S3Info,
    moto_url: str,
    *,
    keep_revisions: int = 2,
) -> EcsRelease:
    """A new cluster with api and web at v1, and an environment releasing to it."""
    from pydantic import SecretStr

    from blocks.aws_credentials import AwsCredentials
    from blocks.health_check import HealthCheck
    from blocks.rollout_ecs import EcsService, EcsTargetSettings

    releases = root / "releases"
    write_migrations(releases)
    name = f"ecs-{secrets.token_hex(3)}"
    cluster = name
    sim.create_services(cluster, {f"{cluster}-{s}": task_definition(s) for s in SERVICES})
    release = EcsRelease(name, sim, cluster, create_database(postgres, sql=""))

    def check(service: str) -> HealthCheck:
        return HealthCheck(
            kind="http",
            url=release.url(service) + PROBES[service],
            version_field="version" if service == "api" else None,
            deadline_seconds=60,
            interval_seconds=0.2,
        )

    AwsCredentials(
        access_key_id="AKIAEXAMPLETESTING00",
        secret_access_key=SecretStr("moto-secret"),
        region=REGION,
        endpoint_url=moto_url,
    ).save(f"{name}-aws", overwrite=True)
    target = EcsTargetSettings(
        kind="ecs",
        cluster=cluster,
        region=REGION,
        endpoint_url=sim.endpoint_url,
        credentials_block=f"{name}-aws",
        services=[EcsService(name=release.service(s)) for s in SERVICES],
        health_checks={release.service(s): [check(s)] for s in SERVICES},
        poll_seconds=0.25,
        rollout_timeout_seconds=90,
        keep_revisions=keep_revisions,
    )
    save_environment_blocks(name, postgres, release.database, s3, target, releases)
    return release
