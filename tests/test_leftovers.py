"""Nothing left behind: by the demo, by a release killed with SIGKILL, by the private engine.

The demo runs in a private mount namespace whose /tmp and /dev/shm are fresh directories,
so whatever it leaves there is seen exactly, whatever else runs on the machine, and any
process still in that namespace afterwards is one it left running. The host's firewall,
network links and namespaces are compared before and after. The other two cases run in this
session's real /tmp: only new entries of the kinds our tools make, not held open by a live
process, count.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.commands import run
from tests.compose_app import build_images
from tests.harness import harness_base
from tests.harness.docker_engine import BASE_IMAGE, HTTP_PORT, DockerEngine, DockerInfo
from tests.harness.postgres import PostgresInfo
from tests.harness.prefect_server import PrefectInfo
from tests.harness.procs import free_port, is_root, new_session_dir, remove_tree, wait_until
from tests.harness.s3 import S3Info
from tests.release_env import save_release_environment

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(
    not is_root(), reason="needs root (a private mount namespace, the private Docker engine)"
)
# Names our tools (or the libraries they use) give to temporary files in /tmp.
TOOL_PREFIXES = ("compose-", "tmp", "slipway-restore-", "prefect", "weed", "seaweedfs", "docker")
# Links a Docker engine makes: the private engine's test compares them, the others not (a
# docker test of this session may start containers meanwhile).
DOCKER_LINKS = ("docker0", "br-", "veth")


def firewall() -> str:
    """The iptables (and ip6tables) rules and chains, without counters or timestamps."""
    lines = []
    for tool in ("iptables-save", "ip6tables-save"):
        if shutil.which(tool):
            out = subprocess.run([tool], capture_output=True, text=True, check=False).stdout
            lines += [
                line.split(" [")[0] if line.startswith(":") else line
                for line in out.splitlines()
                if not line.startswith("#")
            ]
    return "\n".join(lines)


# The SSH test hosts' namespaces and veths (tests/harness/netns.py) come and go with test
# sessions that may run beside this one; their own tests check that they are removed.
SSH_HOSTS = ("slw", "vethslw")


def links(*, docker: bool = True) -> set[str]:
    names = {n for n in os.listdir("/sys/class/net") if not n.startswith(SSH_HOSTS)}
    return names if docker else {n for n in names if not n.startswith(DOCKER_LINKS)}


def netns() -> set[str]:
    run_netns = Path("/run/netns")
    found = set(os.listdir(run_netns)) if run_netns.is_dir() else set()
    return {n for n in found if not n.startswith(SSH_HOSTS)}


def mounts() -> list[str]:
    """/proc/mounts without what test sessions running beside this one mount: the SSH test
    hosts' namespace files (see SSH_HOSTS), their Docker engines' data under the harness's
    base directory (the engine checked here lives elsewhere)."""
    lines = Path("/proc/mounts").read_text().splitlines()
    base = f" {harness_base()}/"
    return [line for line in lines if " /run/netns/slw" not in line and base not in line]


def host_state(*, docker: bool = True) -> dict[str, object]:
    return {
        "firewall": firewall(),
        "links": links(docker=docker),
        "netns": netns(),
        "ip_forward": Path("/proc/sys/net/ipv4/ip_forward").read_text().strip(),
    }


def _open_paths() -> set[str]:
    """Every path a live process holds open, or is bound to as a socket."""
    held: set[str] = set()
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            held.update(os.readlink(fd) for fd in fd_dir.iterdir())
        except OSError:
            continue
    unix = Path("/proc/net/unix").read_text().splitlines()[1:]
    held.update(line.split()[-1] for line in unix if len(line.split()) > 7)
    return held


def new_tool_entries(directory: Path, before: set[str], since: float) -> list[str]:
    """Entries of `directory` made since `since` by our kinds of tools that nobody holds."""
    held = _open_paths()
    found = []
    for name in sorted(set(os.listdir(directory)) - before):
        path = directory / name
        try:
            made = path.lstat().st_ctime
        except FileNotFoundError:
            continue
        if name.startswith(TOOL_PREFIXES) and made >= since and str(path) not in held:
            found.append(str(path))
    return found


def files_under(root: Path, *, skip: Iterable[Path] = ()) -> list[str]:
    skipped = {str(p) for p in skip}
    return sorted(str(p) for p in root.rglob("*") if str(p) not in skipped)


def processes_in_namespace(ns: str) -> list[str]:
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if os.readlink(proc / "ns" / "mnt") == ns:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append(f"{proc.name}: {cmd.strip()}")
        except OSError:
            continue
    return found


def group_members(pgid: int) -> list[str]:
    """The command lines of the live processes in a process group."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            stat = (proc / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            if fields[0] != "Z" and int(fields[2]) == pgid:
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except (OSError, ValueError, IndexError):
            continue
    return found


def test_demo_leaves_no_file_process_or_firewall_rule(tmp_path: Path) -> None:
    if not shutil.which("unshare"):
        pytest.skip("needs unshare (util-linux)")
    # Seen by the demo as /tmp; its TMPDIR is a fresh directory in there, its /dev/shm too.
    fake_tmp = tmp_path / "tmp"
    for sub in ("t", "shm"):
        (fake_tmp / sub).mkdir(parents=True)
    for d in (fake_tmp, fake_tmp / "t", fake_tmp / "shm"):
        d.chmod(0o1777)
    ns_file = fake_tmp / "ns"
    # A checkout under /tmp (a CI clone) stays visible: bound back at its own path.
    keep: list[Path] = []
    bind_repo = ""
    if REPO.is_relative_to("/tmp"):
        inner = fake_tmp / REPO.relative_to("/tmp")
        inner.mkdir(parents=True)
        keep += [inner, *(p for p in inner.parents if p.is_relative_to(fake_tmp) and p != fake_tmp)]
        bind_repo = f"mount --bind {REPO} {inner} && "
    script = (
        f"mount --bind {fake_tmp / 'shm'} /dev/shm && {bind_repo}mount --rbind {fake_tmp} /tmp && "
        'readlink /proc/self/ns/mnt > /tmp/ns && exec "$@"'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SLIPWAY_"))}
    env["TMPDIR"] = "/tmp/t"
    before = host_state(docker=False)
    unshare = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"]
    demo = run([*unshare, sys.executable, "-m", "tests.demo"], env, timeout=600)
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-3000:]
    assert "identical to the original" in demo.stdout
    ns = ns_file.read_text().strip()
    left_running: list[str] = []
    try:
        wait_until(lambda: not processes_in_namespace(ns), timeout=10, what="demo processes")
    except RuntimeError:
        left_running = processes_in_namespace(ns)
        for line in left_running:
            os.kill(int(line.split(":")[0]), signal.SIGKILL)
    assert left_running == []
    assert files_under(fake_tmp, skip=(fake_tmp / "t", fake_tmp / "shm", ns_file, *keep)) == []
    assert host_state(docker=False) == before


@pytest.fixture
def private_engine_base() -> Iterator[Path]:
    # Short: the engine's socket path must fit a unix socket's 108 bytes.
    base = Path(tempfile.mkdtemp(prefix="slw-engine-", dir="/tmp"))
    yield base
    remove_tree(base)


@pytest.mark.docker
def test_private_docker_engine_leaves_the_host_as_it_was(
    docker_engine: DockerInfo, private_engine_base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    del docker_engine  # this session's engine is up first: its docker0 is already there
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    tmp_before, run_before = set(os.listdir("/tmp")), set(os.listdir("/run"))
    mounts_before = mounts()
    before, since = host_state(), time.time()
    # Beside this session's engine on purpose; its one container uses a port of its own.
    engine = DockerEngine(new_session_dir(private_engine_base), machine_lock=False)
    try:
        info = engine.start()
        if not info.started_here:
            pytest.skip(f"a Docker engine already runs at {info.host}: nothing private to test")
        port = free_port()
        client = info.client()
        client.containers.run(
            BASE_IMAGE,
            detach=True,
            init=True,
            ports={f"{HTTP_PORT}/tcp": ("127.0.0.1", port)},
        )

        def serves() -> bool:
            return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).text == "ok\n"

        # A published loopback port works without any firewall rule (docker-proxy).
        wait_until(serves, timeout=30, what="the published port")
    finally:
        engine.stop()
    assert host_state() == before
    assert mounts() == mounts_before
    assert new_tool_entries(Path("/tmp"), tmp_before | {private_engine_base.name}, since) == []
    new_in_run = set(os.listdir("/run")) - run_before
    assert sorted(n for n in new_in_run if n.startswith(("docker", "containerd", "netns"))) == []


@pytest.mark.docker
@pytest.mark.postgres
@pytest.mark.s3
@pytest.mark.prefect
def test_release_killed_mid_rollout_leaves_no_temporary_file(
    docker_engine: DockerInfo,
    postgres: PostgresInfo,
    s3: S3Info,
    prefect_server: PrefectInfo,
    tmp_path: Path,
) -> None:
    client = docker_engine.client()
    build_images(client, versions=("v1",), registry=docker_engine.registry)
    name, app, _, _ = save_release_environment(
        tmp_path / "env", postgres, s3, registry=docker_engine.registry
    )
    fresh_tmp = tmp_path / "tmp"
    fresh_tmp.mkdir()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLIPWAY_", "AWS_", "PG"))}
    env = base | {
        "PREFECT_API_URL": prefect_server.api_url,
        "DOCKER_HOST": docker_engine.host,
        "TMPDIR": str(fresh_tmp),
    }
    tmp_before, since = set(os.listdir("/tmp")), time.time()
    log = tmp_path / "release.log"
    with log.open("wb") as out:
        release = subprocess.Popen(
            [sys.executable, "-m", "deployments.cli", "release", "v1", "--env", name],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        # Killed while a compose command of the rollout runs.
        deadline = time.monotonic() + 240
        while not any("compose" in c and " up " in c for c in group_members(release.pid)):
            assert release.poll() is None, f"the release ended first: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "no `compose up` within 240 s"
            time.sleep(0.02)
    finally:
        os.killpg(release.pid, signal.SIGKILL)
        release.wait()
        try:
            wait_until(lambda: not group_members(release.pid), timeout=10, what="group gone")
        finally:
            app.remove(client)
    assert group_members(release.pid) == []
    assert files_under(fresh_tmp) == []
    assert new_tool_entries(Path("/tmp"), tmp_before, since) == []
