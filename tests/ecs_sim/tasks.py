"""Tasks as real containers: a small container agent for the simulator.

Each task gets a thread that runs its first essential container on the harness's Docker
engine (labelled `slipway.ecs-sim=<simulator id>`, container ports published on
127.0.0.1) and writes the task's state as the ECS agent reports it: PENDING while the
image is pulled (only when it is not on the engine already; ECR images from the
simulator's `registry` instead), RUNNING once the container
runs, STOPPED when it exits ("Essential container in task exited", its exit code), when
the image cannot be pulled ("CannotPullContainerError: ...") or when the scheduler stops
it (the container is stopped, then removed). A container definition's `healthCheck` is
given to Docker as the container's health check (intervals scaled down) and read back as
the task's `healthStatus`; without one, the simulator's `health_path` (if set) is probed
over HTTP through the first port mapping. Other containers of the task are not run.

Without a Docker engine, `FakeTaskRunner` runs tasks in-process (RUNNING at once).
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from docker.errors import DockerException, ImageNotFound

from tests.ecs_sim.store import Task

LABEL = "slipway.ecs-sim"
PROBE_FAILURES = 3  # consecutive failed probes of `health_path` before UNHEALTHY
NANOSECONDS = 1_000_000_000
ECR_HOST = re.compile(r"^[0-9]{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com/")


def matches(patterns: set[str], task: Task) -> bool:
    """Whether a scenario switch covers the task: an image substring, a task definition's
    family, `family:revision` or ARN."""
    definition = task.task_definition
    names = {
        definition["family"],
        f"{definition['family']}:{definition['revision']}",
        definition["taskDefinitionArn"],
    }
    image = str(task.essential.get("image", ""))
    return any(p in names or p in image for p in patterns)


class TaskRunner(threading.Thread):
    """One task's agent loop; it ends once the task is STOPPED."""

    def __init__(self, sim: Any, task: Task) -> None:
        super().__init__(daemon=True, name=f"ecs-task-{task.id[:8]}")
        self.sim, self.task, self.lock = sim, task, sim.store.lock
        self.container = task.essential
        self.checked = "healthCheck" in self.container or bool(sim.health_path)

    def stopping(self) -> bool:
        return self.task.desired_status == "STOPPED" or self.sim.closing.is_set()

    def wait(self) -> bool:
        """One tick; True when the task is to stop."""
        deadline = time.monotonic() + self.sim.tick
        while time.monotonic() < deadline and not self.stopping():
            time.sleep(0.05)
        return self.stopping()

    def set(self, **fields: Any) -> None:
        with self.lock:
            for key, value in fields.items():
                setattr(self.task, key, value)

    def fail(self, reason: str, code: str, container_reason: str = "") -> None:
        with self.lock:
            self.task.stop(reason, code, failed=True)
            self.task.container_reason = container_reason

    def run(self) -> None:
        try:
            self.set(last_status="PENDING")
            if matches(self.sim.stalling, self.task):
                while not self.wait():
                    pass
            elif matches(self.sim.failing, self.task):
                self.wait()
                self.set(exit_code=1)
                self.fail("Essential container in task exited", "EssentialContainerExited")
            else:
                self._run()
        except Exception as exc:  # a simulator bug or a Docker failure: visible to the test
            if not self.sim.closing.is_set():
                self.sim.errors.append(f"task {self.task.id}: {type(exc).__name__}: {exc}")
        finally:
            self._remove()
            with self.lock:
                self.task.stop("Task stopped by the simulator", "ServiceSchedulerInitiated")
                self.task.last_status, self.task.stopped_at = "STOPPED", time.time()

    def _run(self) -> None:
        raise NotImplementedError

    def _remove(self) -> None:
        pass

    def probe(self) -> bool:
        """`health_path` through the first port mapping answers 2xx/3xx."""
        mappings = self.container.get("portMappings") or []
        port = self.task.host_ports.get(int(mappings[0]["containerPort"])) if mappings else None
        if port is None:
            return False
        try:
            url = f"http://127.0.0.1:{port}{self.sim.health_path}"
            with urllib.request.urlopen(url, timeout=2) as answer:
                return bool(200 <= answer.status < 400)
        except (urllib.error.URLError, OSError, ValueError):
            return False


class FakeTaskRunner(TaskRunner):
    """A task without a container: RUNNING after one tick, healthy unless told otherwise."""

    def _run(self) -> None:
        if self.wait():
            return
        self.set(last_status="RUNNING", started_at=time.time())
        if self.checked:
            unhealthy = matches(self.sim.unhealthy, self.task)
            self.set(health="UNHEALTHY" if unhealthy else "HEALTHY")
        while not self.wait():
            pass


class DockerTaskRunner(TaskRunner):
    def _healthcheck(self) -> dict[str, Any] | None:
        check = self.container.get("healthCheck")
        if not check:
            return None
        interval = min(float(check.get("interval", 30)), self.sim.health_interval)
        return {
            "test": check["command"],
            "interval": int(interval * NANOSECONDS),
            "timeout": int(min(float(check.get("timeout", 5)), 2.0) * NANOSECONDS),
            "retries": int(check.get("retries", 3)),
            "start_period": int(min(float(check.get("startPeriod", 0)), 1.0) * NANOSECONDS),
        }

    def _image(self) -> str:
        """The image to run: an ECR image (`ACCOUNT.dkr.ecr.REGION.amazonaws.com/...`) comes
        from the simulator's `registry` when it has one (same repository and tag)."""
        image = str(self.container["image"])
        if self.sim.registry:
            return ECR_HOST.sub(f"{self.sim.registry}/", image)
        return image

    def _pull(self) -> bool:
        client = self.sim.docker_client()
        image = self._image()
        with contextlib.suppress(ImageNotFound):
            client.images.get(image)
            return True
        last = image.rsplit("/", 1)[-1]
        repository, tag = image.rsplit(":", 1) if ":" in last else (image, "latest")
        try:
            client.images.pull(repository, tag=tag)
            return True
        except DockerException as exc:
            text = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            reason = (
                f"CannotPullContainerError: pull image manifest has been retried 1 time(s): {text}"
            )
            self.fail(reason, "TaskFailedToStart", reason)
            return False

    def _run(self) -> None:
        if not self._pull() or self.wait():
            return
        client = self.sim.docker_client()
        ports = [int(p["containerPort"]) for p in self.container.get("portMappings") or []]
        env = {e["name"]: str(e.get("value", "")) for e in self.container.get("environment") or []}
        try:
            created = client.containers.create(
                self._image(),
                command=self.container.get("command"),
                entrypoint=self.container.get("entryPoint"),
                environment=env,
                labels={LABEL: self.sim.id, f"{LABEL}.task": self.task.arn},
                ports={f"{p}/tcp": ("127.0.0.1", None) for p in ports},
                healthcheck=self._healthcheck(),
                name=f"ecs-sim-{self.sim.id}-{self.task.service}-{self.task.id[:12]}",
                init=True,
            )
            self.set(container_id=str(created.id))
            created.start()
            created.reload()
        except DockerException as exc:
            reason = f"CannotStartContainerError: {str(exc).splitlines()[0][:300]}"
            self.fail(reason, "TaskFailedToStart", reason)
            return
        bindings = (created.attrs.get("NetworkSettings") or {}).get("Ports") or {}
        host_ports = {
            int(key.split("/")[0]): int(found[0]["HostPort"])
            for key, found in bindings.items()
            if found
        }
        self.set(host_ports=host_ports, last_status="RUNNING", started_at=time.time())
        failures = 0
        while not self.wait():
            created.reload()
            state = created.attrs.get("State") or {}
            if created.status not in ("running", "created"):
                self.set(exit_code=int(state.get("ExitCode", 0)))
                self.fail("Essential container in task exited", "EssentialContainerExited")
                return
            if matches(self.sim.unhealthy, self.task):
                self.set(health="UNHEALTHY")
            elif "healthCheck" in self.container:
                status = (state.get("Health") or {}).get("Status", "starting")
                health = {"healthy": "HEALTHY", "unhealthy": "UNHEALTHY"}.get(status, "UNKNOWN")
                self.set(health=health)
            elif self.checked:
                failures = 0 if self.probe() else failures + 1
                if failures == 0:
                    self.set(health="HEALTHY")
                elif failures >= PROBE_FAILURES:
                    self.set(health="UNHEALTHY")
        with contextlib.suppress(DockerException):
            created.stop(timeout=2)
            created.reload()
            self.set(exit_code=int((created.attrs.get("State") or {}).get("ExitCode", 0)))

    def _remove(self) -> None:
        if self.task.container_id:
            with contextlib.suppress(DockerException):
                self.sim.docker_client().api.remove_container(self.task.container_id, force=True)
        self.sim.close_docker_client()
