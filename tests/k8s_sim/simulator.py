"""`KubeSimulator`: the API server, the controllers' loop, the pods' kubelet and the
Service-like proxies, started together and stopped together."""

from __future__ import annotations

import contextlib
import secrets
import threading
from types import TracebackType
from typing import Any, Self

import docker
from docker.errors import DockerException

from tests.k8s_sim.deployments import DEPLOYMENTS, DeploymentController
from tests.k8s_sim.fake_pods import FakePodRunner
from tests.k8s_sim.jobs import JobController
from tests.k8s_sim.pods import LABEL, PODS, DockerPodRunner, PodRunner
from tests.k8s_sim.proxy import ServiceProxy
from tests.k8s_sim.replicasets import ReplicaSetController
from tests.k8s_sim.selectors import selector_matches
from tests.k8s_sim.server import ApiServer
from tests.k8s_sim.store import Store
from tests.k8s_sim.tls import ServingCert
from tests.k8s_sim.workloads import pod_ready


class KubeSimulator:
    """A simulated Kubernetes API server on 127.0.0.1 (see the package docstring).

    `docker_host`: a DOCKER_HOST value (the harness's `DockerInfo.host`) to run each Pod's
    first container for real; None runs Pods as in-process fakes. `backoff_base`/
    `backoff_cap`: the image pull and crash-loop backoff (the kubelet's 10 s to 300 s,
    scaled down); `probe_interval`: the longest wait between readiness probes. `tls`: serve
    HTTPS with a certificate from a throwaway CA (`ca_pem`); `token`: the only bearer token
    accepted (401 otherwise).
    """

    def __init__(
        self,
        docker_host: str | None = None,
        *,
        backoff_base: float = 1.0,
        backoff_cap: float = 5.0,
        probe_interval: float = 0.5,
        sync_interval: float = 0.2,
        tls: bool = False,
        token: str | None = None,
    ) -> None:
        self.id = secrets.token_hex(4)
        self.docker_host = docker_host
        self.backoff_base, self.backoff_cap = backoff_base, backoff_cap
        self.probe_interval, self.sync_interval = probe_interval, sync_interval
        self.never_ready: set[str] = set()  # image substrings whose Pods never become Ready
        self.store = Store()
        cert = ServingCert() if tls else None
        self.ca_pem = cert.ca_pem if cert else None  # what clients trust (a pod's ca.crt)
        self.token = token
        self.api = ApiServer(self.store, cert.context() if cert else None, token)
        self.api.logs = self._logs
        self.access = self.api.access  # `.forbidden`: (verb, resource) pairs answered 403
        self._controllers = (
            DeploymentController(self.store),
            ReplicaSetController(self.store),
            JobController(self.store),
        )
        self._runners: dict[str, PodRunner] = {}  # pod uid -> its kubelet thread
        self._proxies: dict[tuple[str, str], ServiceProxy] = {}
        self._stop = threading.Event()
        self._loop = threading.Thread(target=self._run, daemon=True, name="k8s-sim-controllers")
        self._local = threading.local()
        # Unexpected exceptions in the controllers or the HTTP layer: tests assert it is empty.
        self.errors: list[str] = self.api.errors

    @property
    def url(self) -> str:
        return self.api.url

    def docker_client(self) -> docker.DockerClient:
        """This thread's client of the Docker engine."""
        client = getattr(self._local, "client", None)
        if client is None:
            client = docker.DockerClient(base_url=self.docker_host, version="auto", timeout=120)
            self._local.client = client
        return client

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
        self._stop.set()
        self._loop.join(timeout=10)
        self.api.close()
        for proxy in self._proxies.values():
            proxy.close()
        for runner in self._runners.values():
            runner.stop()
        for runner in self._runners.values():
            runner.join(timeout=30)
        if self.docker_host:
            with contextlib.suppress(DockerException):
                api = self.docker_client().api
                for container in api.containers(all=True, filters={"label": f"{LABEL}={self.id}"}):
                    with contextlib.suppress(DockerException):
                        api.remove_container(container["Id"], force=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for controller in self._controllers:
                    controller.sync_all()
                self._sync_pods()
            except Exception as exc:  # a bug in the simulator: keep it visible, keep going
                self.errors.append(f"{type(exc).__name__}: {exc}")
            with self.store.changed:
                self.store.changed.wait(self.sync_interval)

    def _sync_pods(self) -> None:
        pods, _ = self.store.list_objects(PODS, None)
        alive = {p["metadata"]["uid"]: p for p in pods}
        for uid, runner in list(self._runners.items()):
            if uid not in alive:
                runner.stop()
                if not runner.is_alive():
                    del self._runners[uid]
        for uid, pod in alive.items():
            if uid not in self._runners:
                kind = DockerPodRunner if self.docker_host else FakePodRunner
                runner = kind(self, pod)
                self._runners[uid] = runner
                runner.start()

    def _logs(self, namespace: str, name: str, query: dict[str, str]) -> str:
        runner = next(
            (r for r in self._runners.values() if (r.ns, r.name) == (namespace, name)), None
        )
        container_id = getattr(runner, "container_id", "")
        if not (self.docker_host and container_id):
            return ""
        tail = query.get("tailLines")
        with contextlib.suppress(DockerException):
            data = self.docker_client().api.logs(container_id, tail=int(tail) if tail else "all")
            return bytes(data).decode(errors="replace")
        return ""

    # for tests
    def forbid(self, verb: str, resource: str) -> None:
        """Answer 403 Forbidden to `verb` ("patch", "*") on `resource` ("deployments",
        "deployments/status"), and `allowed: false` to access reviews of it."""
        self.access.forbidden.add((verb, resource))

    def ready_ports(self, namespace: str, deployment: str, port: int) -> list[int]:
        """The host ports of `deployment`'s ready Pods' container `port`."""
        found = self.store.find(DEPLOYMENTS, namespace, deployment)
        if found is None:
            return []
        selector = found["spec"].get("selector")
        pods, _ = self.store.list_objects(
            PODS, namespace, lambda p: selector_matches(selector, p["metadata"].get("labels") or {})
        )
        ports = []
        for pod in pods:
            runner = self._runners.get(pod["metadata"]["uid"])
            if runner and pod_ready(pod) and port in runner.host_ports:
                ports.append(runner.host_ports[port])
        return ports

    def service_url(self, deployment: str, port: int = 8080, namespace: str = "default") -> str:
        """A stable http://127.0.0.1:PORT reaching `deployment`'s ready Pods on `port`."""
        key = (namespace, deployment)
        if key not in self._proxies:
            self._proxies[key] = ServiceProxy(lambda: self.ready_ports(namespace, deployment, port))
        return f"http://127.0.0.1:{self._proxies[key].port}"

    def pods(self, deployment: str, namespace: str = "default") -> list[dict[str, Any]]:
        """The Pods of a Deployment (through its selector), as the API has them."""
        found = self.store.find(DEPLOYMENTS, namespace, deployment)
        if found is None:
            return []
        selector = found["spec"].get("selector")
        pods, _ = self.store.list_objects(
            PODS, namespace, lambda p: selector_matches(selector, p["metadata"].get("labels") or {})
        )
        return pods
