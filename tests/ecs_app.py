"""An app on the ECS simulator for the ecs target's tests: a cluster with two services
(api with an envoy sidecar, web), each its own task-definition family."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Literal

from blocks.rollout_ecs import EcsTargetSettings
from tasks.rollout import open_target
from tasks.rollout.ecs import EcsTarget
from tasks.rollout.ecs_task_definitions import family_of, revision_of
from tests.compose_app import image
from tests.ecs_sim import EcsSimulator

REGION = "eu-west-3"
ECR = "123456789012.dkr.ecr.eu-west-3.amazonaws.com"
_names = itertools.count(1)


@dataclass
class EcsApp:
    """A cluster with two services, api and web, their own families (fresh per test)."""

    sim: EcsSimulator
    cluster: str
    api: str
    web: str
    registry: str  # each app its own images, so a scenario switch is the test's only

    def image(self, service: str, version: str) -> str:
        return image(service, version, self.registry)

    def settings(self, **overrides: Any) -> EcsTargetSettings:
        data: dict[str, Any] = {
            "kind": "ecs",
            "cluster": self.cluster,
            "region": REGION,
            "endpoint_url": self.sim.endpoint_url,
            "services": [{"name": self.api, "containers": ["api"]}, self.web],
            "poll_seconds": 0.1,
            "rollout_timeout_seconds": 60,
            "check_permissions": False,
        }
        return EcsTargetSettings.model_validate(data | overrides)

    def target(self, **overrides: Any) -> EcsTarget:
        opened = open_target(self.settings(**overrides))
        assert isinstance(opened, EcsTarget)
        return opened

    def revisions(self, family: str, status: Literal["ACTIVE", "INACTIVE"] = "ACTIVE") -> list[int]:
        arns = self.sim.client().list_task_definitions(familyPrefix=family, status=status)
        return sorted(revision_of(a) for a in arns["taskDefinitionArns"] if family_of(a) == family)


def task_definition(service: str, image_of: str) -> dict[str, Any]:
    """api: its image and an envoy sidecar (not versioned); web: one container."""
    main = {
        "name": service,
        "image": image_of,
        "essential": True,
        "portMappings": [{"containerPort": 8080}],
    }
    containers = [main]
    if service == "api":
        containers.append({"name": "envoy", "image": "envoyproxy/envoy:v1.29", "essential": False})
    return {"containerDefinitions": containers, "networkMode": "awsvpc", "cpu": "256"}


def create_ecs_app(
    sim: EcsSimulator,
    *,
    breaker: tuple[bool, bool] = (True, True),
    api_image: str | None = None,
    initial: str = "v1",
) -> EcsApp:
    """A fresh cluster whose services run `initial` (api: `api_image` if given)."""
    n = next_name()
    app = EcsApp(sim, f"shop-{n}", f"api-{n}", f"web-{n}", f"registry-{n}.example")
    definitions = {
        app.api: task_definition("api", api_image or app.image("api", initial)),
        app.web: task_definition("web", app.image("web", initial)),
    }
    sim.create_services(app.cluster, definitions, circuit_breaker=breaker)
    return app


def next_name() -> int:
    return next(_names)
