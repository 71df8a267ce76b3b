"""The SSH hosts of the harness and the stand-in systemd app on them, checked with paramiko.

No product code here: what the ssh target's tests stand on must itself hold.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from tests.harness import netns
from tests.harness.procs import new_session_dir, reap_stale_sessions, remove_tree, wait_until
from tests.harness.ssh_hosts import SshHost, SshHosts, SshHostsInfo
from tests.ssh_app import SshApp, create_ssh_app

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.ssh_hosts


def connect(
    info: SshHostsInfo,
    host: SshHost,
    *,
    known_hosts: str | None = None,
    timeout: float = 5,
    user: str | None = None,
) -> paramiko.SSHClient:
    """A client that only accepts host keys listed in `known_hosts` (default: the info's)."""
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    for line in (known_hosts if known_hosts is not None else info.known_hosts).splitlines():
        entry = paramiko.hostkeys.HostKeyEntry.from_line(line)
        assert entry is not None
        assert entry.key is not None
        for name in entry.hostnames:
            client.get_host_keys().add(name, entry.key.get_name(), entry.key)
    client.connect(
        host.address,
        host.port,
        user or info.user,
        key_filename=str(info.client_key),
        look_for_keys=False,
        allow_agent=False,
        timeout=timeout,
        banner_timeout=timeout,
        auth_timeout=timeout,
    )
    return client


def run(client: paramiko.SSHClient, command: str, timeout: float = 30) -> tuple[int, str, str]:
    _, stdout, stderr = client.exec_command(command, timeout=timeout)
    out, err = stdout.read().decode(), stderr.read().decode()
    return stdout.channel.recv_exit_status(), out, err


@pytest.fixture
def app(ssh_hosts: SshHostsInfo) -> Iterator[SshApp]:
    made = create_ssh_app(ssh_hosts, unhealthy={("v3", "host2", "api")})
    yield made
    made.remove()
    ssh_hosts.heal_all()


def test_three_hosts_answer_with_their_own_key_and_home(ssh_hosts: SshHostsInfo) -> None:
    assert len(ssh_hosts.hosts) == 3
    assert len({h.address for h in ssh_hosts.hosts}) == 3
    assert len(ssh_hosts.known_hosts.splitlines()) == 3
    for host in ssh_hosts.hosts:
        with connect(ssh_hosts, host) as client:
            status, out, _ = run(client, 'echo "$HOME"; command -v systemctl || true; pwd')
        assert status == 0
        home, *_ = out.splitlines()
        assert home == str(host.root)
    first, second = ssh_hosts.hosts[:2]
    # Each host also answers on its own 127.0.0.1:22: a jump host's hop to itself.
    with connect(ssh_hosts, second) as jump:
        transport = jump.get_transport()
        assert transport is not None
        channel = transport.open_channel("direct-tcpip", ("127.0.0.1", 22), ("127.0.0.1", 0))
        with paramiko.Transport(channel) as hop:
            hop.start_client(timeout=5)
            assert hop.get_remote_server_key().get_base64() == second.host_public_key.split()[1]
    # Strict host keys: unknown, and known under another key, are both refused.
    others = "".join(f"{h.address} {h.host_public_key}\n" for h in ssh_hosts.hosts[1:])
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        connect(ssh_hosts, first, known_hosts=others)
    swapped = f"{first.address} {second.host_public_key}\n"
    with pytest.raises(paramiko.BadHostKeyException):
        connect(ssh_hosts, first, known_hosts=swapped)


def test_stand_in_systemctl_runs_real_processes(app: SshApp) -> None:
    host = app.hosts[0]
    with connect(app.info, host) as client:
        assert run(client, "systemctl is-active api worker") == (3, "inactive\ninactive\n", "")
        assert run(client, 'cd "$HOME" && ln -sfn releases/v1 current') == (0, "", "")
        assert run(client, "systemctl start api") == (0, "", "")
        assert app.live(host) == "v1"
        wait_until(lambda: app.answering(host, "api") == "v1", timeout=10, what="api up")
        assert app.answering(app.hosts[1], "api") is None  # only on that host
        assert run(client, "systemctl is-active api worker") == (3, "active\ninactive\n", "")
        show = "systemctl show --property=Id,LoadState,ActiveState api nope.service worker"
        assert run(client, show) == (
            0,
            "Id=api.service\nLoadState=loaded\nActiveState=active\n\n"
            "Id=nope.service\nLoadState=not-found\nActiveState=inactive\n\n"
            "Id=worker.service\nLoadState=loaded\nActiveState=inactive\n",
            "",
        )
        assert run(client, "systemctl show -p ActiveState api.service") == (
            0,
            "ActiveState=active\n",
            "",
        )
        # A running unit keeps the release it started from until it restarts.
        assert run(client, 'cd "$HOME" && ln -sfn releases/v2 current') == (0, "", "")
        assert app.answering(host, "api") == "v1"
        old_pid = app.unit_pids(host)["api"]
        assert run(client, "systemctl restart api") == (0, "", "")
        assert app.unit_pids(host)["api"] not in (None, old_pid)
        wait_until(lambda: app.answering(host, "api") == "v2", timeout=10, what="api v2")
        assert run(client, "systemctl stop api") == (0, "", "")
        assert app.unit_pids(host)["api"] is None
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((host.address, 8081), timeout=2).close()
        assert run(client, "systemctl start nope") == (
            5,
            "",
            "Failed to start nope.service: Unit nope.service not found.\n",
        )
        assert run(client, "systemctl stop") == (1, "", "Too few arguments.\n")
        assert run(client, "systemctl frobnicate api") == (
            1,
            "",
            "Unknown command verb frobnicate.\n",
        )
        # A unit whose process dies without a stop is failed.
        assert run(client, "systemctl start web") == (0, "", "")
        web = app.unit_pids(host)["web"]
        assert web is not None
        os.kill(web, signal.SIGKILL)
        wait_until(lambda: app.unit_pids(host)["web"] is None, timeout=10, what="web gone")
        assert run(client, "systemctl is-active web") == (3, "failed\n", "")
        assert run(client, "systemctl show -p Id,ActiveState web") == (
            0,
            "Id=web.service\nActiveState=failed\n",
            "",
        )
    events = app.events(host)
    assert [(what, unit) for _, what, unit in events] == [
        ("start", "api"),
        ("stop", "api"),
        ("start", "api"),
        ("stop", "api"),
        ("start", "web"),
    ]
    times = [t for t, _, _ in events]
    assert times == sorted(times)
    assert app.down_intervals(host, units=["api"]) == [(times[1], times[2]), (times[3], math.inf)]


def test_releases_and_unhealthy_units(app: SshApp) -> None:
    for host in app.hosts:
        assert app.live(host) is None
        for version in ("v1", "v2", "v3"):
            release = host.root / "releases" / version
            assert (release / "VERSION").read_text() == f"{version}\n"
            for unit in ("api", "worker", "web"):
                health = release / "www" / unit / "health"
                sick = (version, host.name, unit) == ("v3", "host2", "api")
                assert health.exists() is not sick
    host2 = app.info.host("host2")
    with connect(app.info, host2) as client:
        steps = 'cd "$HOME" && ln -sfn releases/v3 current && systemctl start api worker'
        assert run(client, steps) == (0, "", "")
    wait_until(lambda: app.answering(host2, "worker") == "v3", timeout=10, what="worker up")
    assert app.answering(host2, "api") is None  # up, but 404 on /health


def test_a_cut_host_hangs_then_heals(app: SshApp) -> None:
    info = app.info
    host, other = app.hosts[0], app.hosts[1]
    client = connect(info, host)
    transport = client.get_transport()
    assert transport is not None
    try:
        info.cut(host)
        # An open connection hangs: no answer within 3 s, and no reset either.
        with pytest.raises(paramiko.SSHException, match="Timeout opening channel"):
            run(client, "echo still-here", timeout=3)
        assert transport.is_active()
        # A new connection gets no answer at all (not refused).
        with pytest.raises(TimeoutError):
            connect(info, host, timeout=2)
        with connect(info, other) as ok:
            assert run(ok, "echo fine") == (0, "fine\n", "")
    finally:
        client.close()
        info.heal(host)
    with connect(info, host) as client:
        assert run(client, "echo back") == (0, "back\n", "")


def test_remove_leaves_no_unit_process(app: SshApp) -> None:
    for host in app.hosts:
        with connect(app.info, host) as client:
            steps = 'cd "$HOME" && ln -sfn releases/v1 current && systemctl start api worker web'
            assert run(client, steps) == (0, "", "")
    for host in app.hosts:
        assert all(app.unit_pids(host).values())
    app.remove()
    for host in app.hosts:
        assert app.unit_pids(host) == {"api": None, "worker": None, "web": None}
        left = [
            Path(f"/proc/{pid}/cmdline").read_bytes()
            for pid in netns.pids(host.netns)
            if Path(f"/proc/{pid}/cmdline").exists()
        ]
        assert [c for c in left if str(host.root).encode() in c] == []


def test_deploy_user_runs_systemctl_through_sudo_only(app: SshApp) -> None:
    host = app.hosts[0]
    with connect(app.info, host, user=app.info.deploy_user) as client:
        status, out, _ = run(client, 'id -un; echo "$HOME"')
        assert (status, out) == (0, f"{app.info.deploy_user}\n{host.root}\n")
        assert run(client, 'cd "$HOME" && ln -sfn releases/v1 current') == (0, "", "")
        assert run(client, "systemctl start api") == (
            1,
            "",
            "Failed to start api.service: Interactive authentication required.\n"
            "See system logs and 'systemctl status api.service' for details.\n",
        )
        assert run(client, "systemctl is-active api") == (3, "inactive\n", "")
        if not app.info.sudo:
            pytest.skip("no sudo on this machine: apt-get install sudo")
        assert run(client, "sudo -n systemctl start api") == (0, "", "")
        assert run(client, "sudo -n id -un") == (1, "", "sudo: a password is required\n")
    wait_until(lambda: app.answering(host, "api") == "v1", timeout=10, what="api up")
    pid = app.unit_pids(host)["api"]
    assert "Uid:\t0\t" in Path(f"/proc/{pid}/status").read_text()
    assert [(what, unit) for _, what, unit in app.events(host)] == [("start", "api")]


def _netns_of(pid: int) -> list[str]:
    return [n for n in netns.list_namespaces() if n.startswith(f"{netns.PREFIX}{pid}-")]


def _link_names() -> set[str]:
    return set(os.listdir("/sys/class/net"))


@pytest.fixture
def base() -> Iterator[Path]:
    made = Path(tempfile.mkdtemp(prefix="slw-hosts-", dir="/tmp"))
    yield made
    reap_stale_sessions(made)
    remove_tree(made)


def test_stop_leaves_no_namespace_link_or_process(ssh_hosts: SshHostsInfo, base: Path) -> None:
    del ssh_hosts  # the session's hosts are up: only this service's must go
    service = SshHosts(new_session_dir(base), count=1)
    try:
        info = service.start()
        (host,) = info.hosts
        started = subprocess.Popen(
            ["ip", "netns", "exec", host.netns, "sleep", "600"], start_new_session=True
        )
        # `ip netns exec` enters the namespace a moment after it starts.
        wait_until(
            lambda: started.pid in netns.pids(host.netns),
            timeout=10,
            what="the process entering the namespace",
            interval=0.05,
        )
    finally:
        service.stop()
    started.wait(timeout=10)
    assert host.netns not in netns.list_namespaces()
    assert host.link not in _link_names()


SIGKILLED_SESSION = """
import sys, time
from pathlib import Path
from tests.harness.procs import new_session_dir
from tests.harness.ssh_hosts import SshHosts
info = SshHosts(new_session_dir(Path(sys.argv[1])), count=2).start()
print(" ".join(h.netns for h in info.hosts), flush=True)
time.sleep(600)
"""


def _links_of(names: list[str]) -> list[str]:
    links = []
    for name in names:
        match = netns.NAME.match(name)
        assert match is not None
        links.append(f"{netns.LINK_PREFIX}{match.group(3)}")
    return [link for link in links if link in _link_names()]


@pytest.mark.parametrize("guard", ["guard", "no-guard"])
def test_a_sigkilled_session_leaves_nothing(base: Path, guard: str) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", SIGKILLED_SESSION, str(base)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert child.stdout is not None
        names = child.stdout.readline().split()
        assert len(names) == 2
        assert set(names) <= set(netns.list_namespaces())
        assert len(_links_of(names)) == 2
        if guard == "no-guard":
            (session,) = base.glob("slipway-test-*")
            guard_pid = int((session / "pids" / "ssh-hosts-guard.pid").read_text())
            os.killpg(guard_pid, signal.SIGKILL)
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    if guard == "no-guard":
        # Nobody cleaned up: the next session's start reaps what a dead owner left.
        assert set(names) <= set(netns.list_namespaces())
        assert set(names) <= set(netns.reap_stale())
    wait_until(lambda: not _netns_of(child.pid), timeout=15, what="namespaces removed")
    wait_until(lambda: not _links_of(names), timeout=10, what="links removed")
    reap_stale_sessions(base)
    assert list(base.iterdir()) == []
