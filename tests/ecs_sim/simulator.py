"""`EcsSimulator`: the API server, the service scheduler's loop, the tasks' agents and the
per-service proxies, started together and stopped together."""

from __future__ import annotations

import contextlib
import secrets
import threading
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import boto3
import docker
from botocore.config import Config
from docker.errors import DockerException

from tests.ecs_sim.controller import Controller
from tests.ecs_sim.server import ApiServer
from tests.ecs_sim.store import Store, Task
from tests.ecs_sim.tasks import LABEL, DockerTaskRunner, FakeTaskRunner, TaskRunner
from tests.harness.docker_engine import DockerInfo
from tests.k8s_sim.proxy import ServiceProxy

if TYPE_CHECKING:
    from mypy_boto3_ecs import ECSClient

REGION = "eu-west-3"


class EcsSimulator:
    """A simulated Amazon ECS endpoint on 127.0.0.1 (see the package docstring).

    `engine`: the harness's engine (a `DockerInfo` or a DOCKER_HOST value) to run tasks as
    real containers; None runs them as in-process fakes. `registry` (by default the
    engine's): where tasks pull ECR images from (`ACCOUNT.dkr.ecr.REGION.amazonaws.com/
    REPO:TAG` runs `REGISTRY/REPO:TAG`), so task definitions can name ECR images as in
    production while moto serves ECR's API. `tick`: the scheduler's and the
    agents' period; `retry_delay`: the pause before replacing a failed task;
    `health_path`: when set, tasks whose container has no `healthCheck` are probed over
    HTTP on it (through their first port mapping) and are healthy only when it answers;
    `breaker_threshold`: failed tasks that trip the circuit breaker, instead of the real
    formula; `health_interval`: the Docker health check interval used for every
    container `healthCheck` (the real ones, 30 s by default, scaled down).
    """

    def __init__(
        self,
        engine: DockerInfo | str | None = None,
        *,
        region: str = REGION,
        registry: str | None = None,
        tick: float = 0.25,
        retry_delay: float = 0.5,
        health_path: str = "",
        breaker_threshold: int | None = None,
        health_interval: float = 0.25,
    ) -> None:
        self.id = secrets.token_hex(4)
        self.docker_host = engine.host if isinstance(engine, DockerInfo) else engine
        self.region = region
        default = engine.registry if isinstance(engine, DockerInfo) else None
        self.registry = registry or default
        self.tick, self.retry_delay = tick, retry_delay
        self.health_path, self.health_interval = health_path, health_interval
        self.breaker_threshold = breaker_threshold
        # Scenario switches: image substrings, task definition families, family:revision
        # or ARNs whose tasks fail at once, stay PENDING, or report UNHEALTHY.
        self.failing: set[str] = set()
        self.stalling: set[str] = set()
        self.unhealthy: set[str] = set()
        self.store = Store(region)
        self.api = ApiServer(self.store)
        self.errors: list[str] = self.api.errors  # simulator bugs: tests assert it is empty
        self.closing = threading.Event()
        self._controller = Controller(self)
        self._runners: list[TaskRunner] = []
        self._proxies: dict[tuple[str, str, int], ServiceProxy] = {}
        self._local = threading.local()
        self._loop = threading.Thread(target=self._run, daemon=True, name="ecs-sim-scheduler")

    @property
    def endpoint_url(self) -> str:
        return self.api.url

    def client(self) -> ECSClient:
        """A boto3 ECS client of this endpoint, with dummy credentials."""
        return boto3.client(
            "ecs",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id="AKIASIMULATOR0000000",
            aws_secret_access_key="simulator-secret",  # noqa: S106  (not checked)
            config=Config(retries={"max_attempts": 1}),
        )

    def docker_client(self) -> docker.DockerClient:
        """This thread's client of the Docker engine."""
        client = getattr(self._local, "client", None)
        if client is None:
            client = docker.DockerClient(base_url=self.docker_host, version="auto", timeout=120)
            self._local.client = client
        return client

    def close_docker_client(self) -> None:
        """Close this thread's client (a task's agent thread, as it ends)."""
        client = getattr(self._local, "client", None)
        if client is not None:
            client.close()
            self._local.client = None

    # lifecycle
    def __enter__(self) -> Self:
        self.api.start()
        self._loop.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self.closing.set()
        self._loop.join(timeout=10)
        self.api.close()
        for proxy in self._proxies.values():
            proxy.close()
        for runner in self._runners:
            runner.join(timeout=30)
        if self.docker_host:
            with contextlib.suppress(DockerException):
                api = self.docker_client().api
                for container in api.containers(all=True, filters={"label": f"{LABEL}={self.id}"}):
                    with contextlib.suppress(DockerException):
                        api.remove_container(container["Id"], force=True)

    def _run(self) -> None:
        while not self.closing.wait(self.tick):
            try:
                with self.store.lock:
                    self._controller.sync_all()
            except Exception as exc:  # a bug in the simulator: keep it visible, keep going
                self.errors.append(f"scheduler: {type(exc).__name__}: {exc}")
            self._runners = [r for r in self._runners if r.is_alive()]

    def run_task(self, task: Task) -> None:
        """Start the agent of a task the scheduler placed."""
        kind = DockerTaskRunner if self.docker_host else FakeTaskRunner
        runner = kind(self, task)
        self._runners.append(runner)
        runner.start()

    # for tests
    def fail_image(self, pattern: str) -> None:
        """Tasks whose image contains `pattern` (or of that family, family:revision or task
        definition ARN) stop at once: "Essential container in task exited", exit code 1."""
        self.failing.add(pattern)

    def stall_image(self, pattern: str) -> None:
        """Such tasks stay PENDING until stopped."""
        self.stalling.add(pattern)

    def unhealthy_image(self, pattern: str) -> None:
        """Such tasks run but report UNHEALTHY (then the scheduler replaces them)."""
        self.unhealthy.add(pattern)

    def deny(self, operation: str) -> None:
        """Answer AccessDeniedException to `operation` ("UpdateService")."""
        self.api.denied.add(operation)

    def create_services(
        self,
        cluster: str,
        services: dict[str, dict[str, Any]],
        *,
        desired_count: int = 1,
        circuit_breaker: tuple[bool, bool] = (True, True),
    ) -> None:
        """The cluster and, per service name, a task definition (family = service name)
        from the given RegisterTaskDefinition fields and a service running it."""
        client = self.client()
        client.create_cluster(clusterName=cluster)
        for name, definition in services.items():
            registered = client.register_task_definition(**{"family": name, **definition})
            enable, rollback = circuit_breaker
            client.create_service(
                cluster=cluster,
                serviceName=name,
                taskDefinition=registered["taskDefinition"]["taskDefinitionArn"],
                desiredCount=desired_count,
                launchType="FARGATE",
                deploymentConfiguration={
                    "deploymentCircuitBreaker": {"enable": enable, "rollback": rollback}
                },
            )

    def ready_ports(self, cluster: str, service: str, port: int) -> list[int]:
        """Host ports of `port` on the service's RUNNING, healthy tasks: the PRIMARY
        deployment's, or when it has none yet, the older deployments' (as a load balancer
        keeps routing to the healthy targets it has)."""
        with self.store.lock:
            found = self.store.find_service(cluster, service)
            if found is None:
                return []
            ready = [
                t
                for t in self.store.service_tasks(found)
                if t.last_status == "RUNNING"
                and t.desired_status == "RUNNING"
                and self._controller.healthy(t)
                and port in t.host_ports
            ]
            primary = [t for t in ready if t.deployment_id == found.primary["id"]]
            return [t.host_ports[port] for t in primary or ready]

    def service_url(self, service: str, *, cluster: str = "default", port: int = 8080) -> str:
        """A stable http://127.0.0.1:PORT reaching the service's tasks on container `port`."""
        key = (cluster, service, port)
        if key not in self._proxies:
            self._proxies[key] = ServiceProxy(lambda: self.ready_ports(cluster, service, port))
        return f"http://127.0.0.1:{self._proxies[key].port}"

    def tasks(self, service: str, cluster: str = "default") -> list[Task]:
        """The service's tasks, stopped ones included (oldest first)."""
        with self.store.lock:
            found = self.store.find_service(cluster, service)
            return self.store.service_tasks(found) if found else []
