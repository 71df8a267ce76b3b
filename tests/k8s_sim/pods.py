"""Pods as real containers: a small kubelet for the simulator.

Each Pod gets a thread that runs its first container on the harness's Docker engine
(labelled `slipway.k8s-sim=<simulator id>`, ports published on 127.0.0.1) and writes the
Pod's status as the kubelet does: phase, conditions (PodScheduled, Initialized,
ContainersReady, Ready) and `containerStatuses` (state running/waiting/terminated,
`lastState.terminated`, `restartCount`, `ready`). Ready means running and, when the
container has a `readinessProbe.httpGet`, that probe answering 2xx/3xx (probed through the
published port). An image that cannot be pulled leaves the Pod Pending with `ErrImagePull`
then `ImagePullBackOff`; a container that exits is restarted with backoff and shows
`CrashLoopBackOff` with `lastState.terminated`. Deleting the Pod removes its container.

Without a Docker engine, tests/k8s_sim/fake_pods.py runs Pods as in-process HTTP servers.
"""

from __future__ import annotations

import base64
import contextlib
import threading
import urllib.error
import urllib.request
from typing import Any

import docker
from docker.errors import DockerException, ImageNotFound, NotFound

from tests.k8s_sim.resources import resource
from tests.k8s_sim.store import Store, now
from tests.k8s_sim.store_errors import ApiError

PODS = resource("Pod")
CONFIGMAPS = resource("ConfigMap")
SECRETS = resource("Secret")
LABEL = "slipway.k8s-sim"


class Backoff:
    """Kubelet-like exponential backoff, scaled down for tests (`base` doubling to `cap`)."""

    def __init__(self, base: float, cap: float) -> None:
        self.base, self.cap, self.next = base, cap, base

    def take(self) -> float:
        delay, self.next = self.next, min(self.next * 2, self.cap)
        return delay


class PodRunner(threading.Thread):
    """One Pod's kubelet loop (a thread); `stop()` ends it and removes the container."""

    def __init__(self, sim: Any, pod: dict[str, Any]) -> None:
        super().__init__(daemon=True, name=f"pod-{pod['metadata']['name']}")
        self.sim = sim
        self.store: Store = sim.store
        self.ns, self.name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        self.uid = pod["metadata"]["uid"]
        self.spec = pod["spec"]
        self.container = self.spec["containers"][0]
        self.stopped = threading.Event()
        self.host_ports: dict[int, int] = {}  # container port -> 127.0.0.1 port
        self.pod_ip = ""
        self.ready = False
        self.started_at = ""
        self.restarts = 0
        self.waiting: tuple[str, str] | None = ("ContainerCreating", "")
        self.last_terminated: dict[str, Any] | None = None
        # Set when a container that is not restarted (restartPolicy Never/OnFailure) ended.
        self.terminated: dict[str, Any] | None = None
        self.container_id = ""

    # status
    def _container_status(self) -> dict[str, Any]:
        image = self.container["image"]
        status: dict[str, Any] = {
            "name": self.container["name"],
            "image": image,
            "imageID": "",
            "ready": self.ready,
            "restartCount": self.restarts,
            "started": self.waiting is None,
            "state": {},
            "lastState": {},
        }
        if self.container_id:
            status["containerID"] = f"docker://{self.container_id}"
        if self.terminated is not None:
            status["state"] = {"terminated": self.terminated}
        elif self.waiting is None:
            status["state"] = {"running": {"startedAt": self.started_at}}
        else:
            reason, message = self.waiting
            status["state"] = {
                "waiting": {"reason": reason, **({"message": message} if message else {})}
            }
        if self.last_terminated:
            status["lastState"] = {"terminated": self.last_terminated}
        return status

    def phase(self) -> str:
        if self.terminated is not None:
            return "Succeeded" if self.terminated["exitCode"] == 0 else "Failed"
        return "Running" if self.waiting is None else "Pending"

    def finished(self, code: int) -> bool:
        """Record an exit; True when the restart policy says the Pod is done."""
        ended = {
            "exitCode": code,
            "reason": "Error" if code else "Completed",
            "startedAt": self.started_at,
            "finishedAt": now(),
        }
        if self.container_id:
            ended["containerID"] = f"docker://{self.container_id}"
        policy = self.spec.get("restartPolicy", "Always")
        if policy == "Never" or (policy == "OnFailure" and code == 0):
            self.terminated, self.ready = ended, False
            self.publish()
            return True
        self.last_terminated = ended
        return False

    def publish(self) -> None:
        """Write the Pod's status if it changed (no write when the same)."""
        others = [
            {
                "name": c["name"],
                "image": c["image"],
                "imageID": "",
                "ready": self.ready,
                "restartCount": 0,
                "started": self.ready,
                "state": {"running": {"startedAt": self.started_at}},
                "lastState": {},
            }
            for c in self.spec["containers"][1:]
        ]
        statuses = [self._container_status(), *others]

        def change(pod: dict[str, Any]) -> None:
            if pod["metadata"]["uid"] != self.uid:
                return
            status = pod.setdefault("status", {})
            status["phase"] = self.phase()
            status["hostIP"] = "127.0.0.1"
            if self.pod_ip:
                status["podIP"] = self.pod_ip
                status["podIPs"] = [{"ip": self.pod_ip}]
            status.setdefault("startTime", now())
            status["containerStatuses"] = statuses
            old = {c["type"]: c for c in status.get("conditions") or []}
            wanted = {
                "PodScheduled": "True",
                "Initialized": "True",
                "ContainersReady": "True" if self.ready else "False",
                "Ready": "True" if self.ready else "False",
            }
            conditions = []
            for kind, value in wanted.items():
                cond = old.get(kind)
                if cond is None or cond["status"] != value:
                    cond = {
                        "type": kind,
                        "status": value,
                        "lastProbeTime": None,
                        "lastTransitionTime": now(),
                    }
                    if value == "False" and kind in ("Ready", "ContainersReady"):
                        done = self.terminated is not None
                        cond["reason"] = "PodCompleted" if done else "ContainersNotReady"
                        if not done:
                            cond["message"] = (
                                f"containers with unready status: [{self.container['name']}]"
                            )
                conditions.append(cond)
            status["conditions"] = conditions

        with contextlib.suppress(ApiError):
            self.store.mutate(PODS, self.ns, self.name, change, subresource="status")

    # lifecycle
    def stop(self) -> None:
        self.stopped.set()

    def run(self) -> None:
        try:
            self._run()
        except Exception as exc:  # a simulator bug or a Docker failure: visible to the test
            if not self.stopped.is_set():
                self.sim.errors.append(f"pod {self.ns}/{self.name}: {type(exc).__name__}: {exc}")
        finally:
            self._remove()

    def _run(self) -> None:
        raise NotImplementedError

    def _remove(self) -> None:
        pass

    def probe_ok(self) -> bool:
        """The readiness probe (httpGet) through the published port; no probe: True."""
        if any(pattern in self.container["image"] for pattern in self.sim.never_ready):
            return False
        probe = self.container.get("readinessProbe") or {}
        http = probe.get("httpGet")
        if not http:
            return True
        port = http.get("port")
        if isinstance(port, str):
            port = next(
                (
                    p["containerPort"]
                    for p in self.container.get("ports") or []
                    if p.get("name") == port
                ),
                None,
            )
        host_port = self.host_ports.get(int(port or 0))
        if host_port is None:
            return False
        url = f"http://127.0.0.1:{host_port}{http.get('path', '/')}"
        try:
            with urllib.request.urlopen(url, timeout=float(probe.get("timeoutSeconds", 1))) as r:
                return bool(200 <= r.status < 400)
        except (urllib.error.URLError, OSError, ValueError):
            return False


class DockerPodRunner(PodRunner):
    def _env(self) -> list[str]:
        env: dict[str, str] = {}
        for source in self.container.get("envFrom") or []:
            ref = source.get("configMapRef") or source.get("secretRef") or {}
            res = CONFIGMAPS if "configMapRef" in source else SECRETS
            obj = self.store.find(res, self.ns, ref.get("name", "")) or {}
            for key, value in (obj.get("data") or {}).items():
                env[source.get("prefix", "") + key] = (
                    base64.b64decode(value).decode() if res is SECRETS else str(value)
                )
        for item in self.container.get("env") or []:
            if "value" in item:
                env[item["name"]] = str(item["value"])
                continue
            source = item.get("valueFrom") or {}
            for kind, res in (("configMapKeyRef", CONFIGMAPS), ("secretKeyRef", SECRETS)):
                ref = source.get(kind)
                if ref:
                    obj = self.store.find(res, self.ns, ref.get("name", "")) or {}
                    value = (obj.get("data") or {}).get(ref.get("key", ""))
                    if value is not None:
                        env[item["name"]] = (
                            base64.b64decode(value).decode() if res is SECRETS else str(value)
                        )
        return [f"{k}={v}" for k, v in env.items()]

    def _ports(self) -> list[int]:
        ports = {int(p["containerPort"]) for p in self.container.get("ports") or []}
        http = (self.container.get("readinessProbe") or {}).get("httpGet") or {}
        if isinstance(http.get("port"), int):
            ports.add(http["port"])
        return sorted(ports)

    def _pull(self, client: docker.DockerClient) -> bool:
        image = self.container["image"]
        policy = self.container.get("imagePullPolicy", "IfNotPresent")
        if policy != "Always":
            with contextlib.suppress(ImageNotFound):
                client.images.get(image)
                return True
            if policy == "Never":
                self.waiting = (
                    "ErrImageNeverPull",
                    f'Container image "{image}" is not present with pull policy of Never',
                )
                return False
        backoff = Backoff(self.sim.backoff_base, self.sim.backoff_cap)
        first = True
        while not self.stopped.is_set():
            try:
                repository, _, tag = (
                    image.rpartition(":")
                    if ":" in image.rsplit("/", 1)[-1]
                    else (image, "", "latest")
                )
                client.images.pull(repository, tag=tag)
                return True
            except DockerException as exc:
                text = str(exc).splitlines()[0][:300]
                if first:
                    self.waiting = ("ErrImagePull", f'failed to pull image "{image}": {text}')
                    first = False
                else:
                    self.waiting = ("ImagePullBackOff", f'Back-off pulling image "{image}"')
                self.publish()
                self.stopped.wait(backoff.take())
                self.waiting = ("ImagePullBackOff", f'Back-off pulling image "{image}"')
        return False

    def _run(self) -> None:
        client = self.sim.docker_client()
        self.publish()
        if not self._pull(client):
            return
        try:
            created = client.containers.create(
                self.container["image"],
                command=self.container.get("args"),
                entrypoint=self.container.get("command"),
                environment=self._env(),
                labels={
                    LABEL: self.sim.id,
                    f"{LABEL}.pod": f"{self.ns}/{self.name}",
                    f"{LABEL}.uid": self.uid,
                },
                ports={f"{p}/tcp": ("127.0.0.1", None) for p in self._ports()},
                name=f"k8s-sim-{self.sim.id}-{self.ns}-{self.name}"[:120],
                init=True,
            )
        except DockerException as exc:
            self.waiting = ("CreateContainerError", str(exc).splitlines()[0][:300])
            self.publish()
            return
        self.container_id = str(created.id)
        backoff = Backoff(self.sim.backoff_base, self.sim.backoff_cap)
        failures = 0
        while not self.stopped.is_set():
            try:
                created.start()
                created.reload()
            except DockerException as exc:
                self.waiting = ("CreateContainerError", str(exc).splitlines()[0][:300])
                self.publish()
                self.stopped.wait(backoff.take())
                continue
            started = now()
            network = created.attrs.get("NetworkSettings") or {}
            self.pod_ip = str(network.get("IPAddress") or "")
            for key, bindings in (network.get("Ports") or {}).items():
                if bindings:
                    self.host_ports[int(key.split("/")[0])] = int(bindings[0]["HostPort"])
            self.ready = False
            probe = self.container.get("readinessProbe") or {}
            period = min(float(probe.get("periodSeconds", 10)), self.sim.probe_interval)
            seen_running = False
            while not self.stopped.is_set():
                # Look, then report: as with the kubelet's periodic relist, a container that
                # dies at once is never reported running (nor Ready).
                self.stopped.wait(period)
                created.reload()
                if created.status not in ("running", "created"):
                    break
                if not seen_running:
                    seen_running, self.started_at, self.waiting = True, started, None
                    self.publish()
                ok = self.probe_ok()
                failures = 0 if ok else failures + 1
                if ok and not self.ready:
                    self.ready = True
                    self.publish()
                elif not ok and self.ready and failures >= int(probe.get("failureThreshold", 3)):
                    self.ready = False
                    self.publish()
            if self.stopped.is_set():
                return
            self.started_at = started
            state = created.attrs.get("State") or {}
            if self.finished(int(state.get("ExitCode", 0))):
                self.stopped.wait()  # a finished Pod stays until deleted
                return
            self.restarts += 1
            self.ready = False
            delay = backoff.take()
            self.waiting = (
                "CrashLoopBackOff",
                f"back-off {delay:g}s restarting failed container={self.container['name']} pod={self.name}_{self.ns}({self.uid})",
            )
            self.publish()
            self.stopped.wait(delay)

    def _remove(self) -> None:
        if not self.container_id:
            return
        with contextlib.suppress(DockerException, NotFound):
            self.sim.docker_client().containers.get(self.container_id).remove(force=True)
