"""The ssh target on three real sshd hosts (network namespaces), without Prefect.

Host keys, rolling one host at a time (observed from the hosts' own event logs), secrets
kept off command lines (observed in /proc while the step runs), timeouts, output tails,
the per-host lock, preflight, and a jump host. The release flow over this target is in
tests/test_ssh_release.py; the interface contract in tests/test_rollout_contract.py.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from blocks.errors import ConfigError, SlipwayError
from blocks.rollout_ssh import SshTargetSettings
from tasks.rollout import RolloutFailed, open_target
from tasks.rollout.ssh import SshTarget, ssh_auth
from tasks.rollout.ssh_session import HostUnreachable, SshSession
from tests.harness.ssh_hosts import SshHostsInfo
from tests.ssh_app import SshApp, create_ssh_app

pytestmark = [pytest.mark.ssh_hosts]


@pytest.fixture
def app(ssh_hosts: SshHostsInfo) -> Iterator[SshApp]:
    made = create_ssh_app(ssh_hosts, unhealthy={("v3", "host2", "api")})
    try:
        yield made
    finally:
        made.remove()


def target(app: SshApp, **overrides: Any) -> SshTarget:
    opened = open_target(SshTargetSettings.model_validate(app.settings(**overrides)))
    assert isinstance(opened, SshTarget)
    return opened


def down_windows(app: SshApp, since: float) -> dict[str, tuple[float, float]]:
    """Per host: from its first stop to its last start since `since` (the time it did not
    serve whole)."""
    windows = {}
    for host in app.hosts:
        events = [e for e in app.events(host) if e[0] >= since]
        stops = [t for t, what, _ in events if what == "stop"]
        starts = [t for t, what, _ in events if what == "start" and stops and t > stops[0]]
        windows[host.name] = (stops[0], starts[-1])
    return windows


def overlapping(windows: dict[str, tuple[float, float]]) -> list[tuple[str, str]]:
    names = sorted(windows)
    return [
        (a, b)
        for i, a in enumerate(names)
        for b in names[i + 1 :]
        if windows[a][0] < windows[b][1] and windows[b][0] < windows[a][1]
    ]


def all_answer(app: SshApp, version: str) -> dict[str, dict[str, str | None]]:
    return {
        h.name: {u: app.answering(h, u) for u in ("api", "worker", "web")}
        for h in app.hosts
        if any(app.answering(h, u) != version for u in ("api", "worker", "web"))
    }


def test_v1_then_v2_on_three_hosts_every_host_answers_v2(app: SshApp) -> None:
    with target(app) as t:
        assert t.current_version() is None
        t.deploy("v1")
        assert all_answer(app, "v1") == {}
        report = t.deploy("v2")
        assert t.current_version() == "v2"
    assert all_answer(app, "v2") == {}
    assert [s.service for s in report.services] == ["api", "worker", "web"]
    # Every host's gate was probed: three hosts' URLs in each service's results.
    assert {r.check.split("//")[1].split(":")[0] for r in report.services[0].health.results} == {
        h.address for h in app.hosts
    }


def test_unhealthy_on_one_host_names_it_and_a_redeploy_brings_all_back(app: SshApp) -> None:
    with target(app) as t:
        t.deploy("v2")
        with pytest.raises(RolloutFailed) as failed:
            t.deploy("v3")
        host2 = app.hosts[1].address
        message = str(failed.value)
        assert f"failed at api: on {host2} (hosts changed: " in message
        assert "\n" not in message
        # What the rollback does: the version before, on every host.
        t.deploy("v2")
    assert all_answer(app, "v2") == {}


def test_an_unknown_host_key_is_refused_before_anything_runs(app: SshApp) -> None:
    # known_hosts without host2's line.
    lines = [line for line in app.info.known_hosts.splitlines() if app.hosts[1].address not in line]
    with (
        target(app, known_hosts="\n".join(lines) + "\n") as t,
        pytest.raises(SlipwayError) as refused,
    ):
        t.deploy("v1")
    message = str(refused.value)
    key = app.hosts[1].host_public_key.split()
    fingerprint = subprocess.run(
        ["ssh-keygen", "-lf", "-"], input=" ".join(key), capture_output=True, text=True, check=True
    ).stdout.split()[1]
    assert f"host key of {app.hosts[1].address} is unknown" in message
    assert fingerprint in message  # SHA256:..., the fingerprint offered
    assert all(app.events(h) == [] for h in app.hosts), "nothing ran on any host"


def test_a_changed_host_key_is_refused(app: SshApp, tmp_path: Path) -> None:
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    forged = "\n".join(
        f"{h.address} {other.with_suffix('.pub').read_text().split()[0]} "
        f"{other.with_suffix('.pub').read_text().split()[1]}"
        if h == app.hosts[0]
        else f"{h.address} {h.host_public_key}"
        for h in app.hosts
    )
    with target(app, known_hosts=forged) as t, pytest.raises(SlipwayError, match="CHANGED"):
        t.preflight("v1")


def test_one_host_at_a_time_never_has_two_hosts_down(app: SshApp) -> None:
    slow = ["sleep 0.5", "ln -sfn releases/{version} current"]
    with target(app, max_parallel=1, deploy_steps=slow) as t:
        t.deploy("v1")
        since = time.time()
        t.deploy("v2")
    windows = down_windows(app, since)
    assert len(windows) == 3
    assert overlapping(windows) == []
    assert all_answer(app, "v2") == {}
    # All at once (the default), the same rollout does have hosts down together: the
    # check above can fail.
    with target(app, deploy_steps=slow) as t:
        since = time.time()
        t.deploy("v1")
    windows = down_windows(app, since)
    assert overlapping(windows)


def test_secrets_reach_steps_by_stdin_never_a_command_line(app: SshApp) -> None:
    token = "tok-" + secrets.token_hex(12)
    seen: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    text = cmdline.read_bytes().decode(errors="replace")
                except OSError:
                    continue
                if token in text:
                    seen.append(text)
            time.sleep(0.05)

    settings = SshTargetSettings.model_validate(
        app.settings(
            deploy_steps=[
                'printf %s "$DEPLOY_TOKEN" | sha256sum > token.sha; sleep 1',
                "ln -sfn releases/{version} current",
            ],
            environment={"PLAIN": "not secret"},
        )
    )
    auth = ssh_auth(settings)
    auth.secret_env = {"DEPLOY_TOKEN": token}
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with SshTarget(settings, auth) as t:
            t.deploy("v1")
    finally:
        stop.set()
        watcher.join()
    digest = hashlib.sha256(token.encode()).hexdigest()
    for host in app.hosts:
        assert (host.root / "token.sha").read_text().split()[0] == digest
    assert seen == []


def test_a_step_past_its_timeout_is_killed_and_named(app: SshApp) -> None:
    with (
        target(app, deploy_steps=["sleep 30 # slow step"], command_timeout_seconds=2) as t,
        pytest.raises(RolloutFailed, match=r"timed out after 2 s") as failed,
    ):
        t.deploy("v1")
    assert "sleep 30 # slow step" in str(failed.value)
    # The remote `timeout` killed it: no sleep left on any host.
    time.sleep(0.5)
    leftovers = [p for p in Path("/proc").glob("[0-9]*/cmdline") if b"slow step" in _read(p)]
    assert leftovers == []


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def test_step_output_tails_are_kept_per_host(app: SshApp) -> None:
    steps = ["seq 1 50", "ln -sfn releases/{version} current"]
    with target(app, deploy_steps=steps, output_lines=5) as t:
        report = t.deploy("v1")
    for host in app.hosts:
        assert report.output[f"{host.address} deploy step 1"] == "46\n47\n48\n49\n50"


def test_commands_of_a_host_wait_for_its_lock(app: SshApp) -> None:
    settings = SshTargetSettings.model_validate(app.settings())
    auth = ssh_auth(settings)
    host = app.hosts[0]
    first = SshSession(settings, auth, host.address, 22)
    second = SshSession(settings, auth, host.address, 22)
    slow = threading.Thread(
        target=lambda: first.run("sleep 1.5; echo first >> order", label="first")
    )
    slow.start()
    time.sleep(0.5)
    second.run("echo second >> order", label="second")
    slow.join()
    first.close()
    second.close()
    assert (host.root / "order").read_text().split() == ["first", "second"]


def test_preflight_names_missing_units_and_unreachable_hosts(app: SshApp) -> None:
    with target(app, services=["api", "worker", "web", "mailer"]) as t:
        with pytest.raises(SlipwayError, match="has no systemd unit mailer") as missing:
            t.preflight("v1")
        assert all(h.address in str(missing.value) for h in app.hosts)
    app.info.cut(app.hosts[2])
    try:
        with target(app, connect_timeout_seconds=2) as t, pytest.raises(SlipwayError) as cut:
            t.preflight("v1")
    finally:
        app.info.heal(app.hosts[2])
    message = str(cut.value)
    assert message.startswith(f"{app.hosts[2].address}: cannot reach {app.hosts[2].address}:22")
    assert "no answer within 2 s" in message
    assert app.hosts[0].address not in message


def test_a_jump_host_carries_the_connection(app: SshApp) -> None:
    # host1 reached through host2: inside host2's namespace, 10.200.x of host1 is not
    # routed, so the hop is host2's own sshd seen from itself as 127.0.0.1.
    jump = app.hosts[1]
    known = app.info.known_hosts + f"127.0.0.1 {jump.host_public_key}\n"
    settings = SshTargetSettings.model_validate(
        app.settings(hosts=["127.0.0.1"], jump_host=f"root@{jump.address}", known_hosts=known)
    )
    session = SshSession(settings, ssh_auth(settings), "127.0.0.1", 22)
    try:
        home = session.run('echo "$HOME"', label="home").output.strip()
    finally:
        session.close()
    assert home == str(jump.root)


def test_bad_settings_are_one_line_config_errors(app: SshApp) -> None:
    cases = {
        "hosts": ([], "hosts must list each host once"),
        "deploy_steps": ([], "deploy_steps is empty"),
        "version_command": ("cat VERSION", "one of them"),
        "services": (["api", "bad unit!"], "not a systemd unit name"),
    }
    for key, (value, message) in cases.items():
        with pytest.raises(ConfigError, match=message):
            SshTargetSettings.model_validate(app.settings(**{key: value}))
    with pytest.raises(ConfigError, match="is not an address"):
        SshTargetSettings.model_validate(app.settings(hosts=["web 1"]))
    settings = SshTargetSettings.model_validate(app.settings(connect_timeout_seconds=1))
    nowhere = SshSession(settings, ssh_auth(settings), "10.255.255.1", 22)
    with pytest.raises(HostUnreachable, match=r"cannot reach 10\.255\.255\.1:22"):
        nowhere.check()


def test_a_non_root_user_runs_systemctl_through_sudo(app: SshApp) -> None:
    if not app.info.sudo:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail("sudo is not installed under CI: make system-deps installs it")
        pytest.skip("sudo is not installed: apt-get install sudo")
    user = app.info.deploy_user
    with target(app, user=user) as t:  # sudo: by default when the user is not root
        t.deploy("v1")
    assert all_answer(app, "v1") == {}
    for host in app.hosts:
        # The steps ran as the user (not root); the units were started as root, by sudo.
        assert (host.root / "current").lstat().st_uid != 0
        for pid in app.unit_pids(host).values():
            status = Path(f"/proc/{pid}/status").read_text()
            assert next(ln for ln in status.splitlines() if ln.startswith("Uid:")).split()[1] == "0"
    # Without sudo, the user cannot start units: the rollout says so in one line.
    app.remove()  # every unit stopped; the hosts still hold v1
    with (
        target(app, user=user, sudo=False) as t,
        pytest.raises(RolloutFailed, match="Interactive authentication required") as failed,
    ):
        t.deploy("v1")
    assert "\n" not in str(failed.value)


def test_the_ssh_agent_and_a_known_hosts_file(
    app: SshApp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(app.info.known_hosts)
    socket_path = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(socket_path)], stdout=subprocess.DEVNULL)
    try:
        wait = time.monotonic() + 10
        while not socket_path.exists() and time.monotonic() < wait:
            time.sleep(0.05)
        env = {**os.environ, "SSH_AUTH_SOCK": str(socket_path)}
        subprocess.run(
            ["ssh-add", "-q", str(app.info.client_key)], env=env, check=True, capture_output=True
        )
        monkeypatch.setenv("SSH_AUTH_SOCK", str(socket_path))
        monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh/id_* to fall back on
        with target(app, identity_file=None, known_hosts=str(known)) as t:
            t.deploy("v1")
        assert all_answer(app, "v1") == {}
        # Without the agent, no key is left to offer: one line says so.
        with (
            target(app, identity_file=None, use_agent=False, known_hosts=str(known)) as t,
            pytest.raises(SlipwayError, match="no key to log in to root@10"),
        ):
            t.preflight()
        # A key the hosts do not know is refused.
        other = tmp_path / "other"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True
        )
        with (
            target(app, identity_file=str(other), use_agent=False, known_hosts=str(known)) as t,
            pytest.raises(SlipwayError, match="refused every key offered"),
        ):
            t.preflight()
    finally:
        agent.terminate()
        agent.wait()


def test_revisions_are_a_kubernetes_targets(app: SshApp) -> None:
    with target(app) as t:
        assert t.history() == {}
        with pytest.raises(
            SlipwayError, match="keeps no revisions: --to-revision is for kubernetes"
        ):
            t.to_revision(2)
