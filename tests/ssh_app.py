"""A stand-in systemd app on the SSH test hosts, laid out as Qubeless is.

On every host (its HOME, see tests/harness/ssh_hosts.py):
- `bin/systemctl`: tests/ssh_app_systemctl.sh, starting and stopping real processes;
- `units/<unit>` for api, worker, web: busybox httpd on 8081, 8082, 8080 serving
  `current/www/<unit>` (resolved when the unit starts, so a running unit keeps serving the
  release it started from until it is restarted);
- `releases/<version>/VERSION` and `releases/<version>/www/<unit>/health` holding
  `{"version": "<version>"}`, except for the unhealthy (version, host, unit) triples
  (`*` for every host or unit), whose health file is absent (404);
- no `current` at first; `events.log` records every start and stop with its time, and
  `calls.log` every call of the stand-in systemctl.
The HOME belongs to the non-root deploy user too; only root (or `sudo -n`) may start units.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.harness import netns
from tests.harness.ssh_hosts import SshHost, SshHostsInfo

SYSTEMCTL = Path(__file__).with_name("ssh_app_systemctl.sh")
PORTS = {"api": 8081, "worker": 8082, "web": 8080}
UNITS = tuple(PORTS)
VERSIONS = ("v1", "v2", "v3")
ANY = "*"


def _busybox() -> str:
    found = shutil.which("busybox") or shutil.which("busybox", path="/bin:/usr/bin")
    if found is None:
        raise RuntimeError("busybox not found: apt-get install busybox-static")
    return found


def _processes_of(host: SshHost) -> list[int]:
    """Processes in the host's namespace started from its HOME (units, stand-in commands)."""
    found = []
    for pid in netns.pids(host.netns):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if str(host.root) in cmdline:
            found.append(pid)
    return found


def _stop_processes(host: SshHost) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = _processes_of(host)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        for _ in range(100):
            if not _processes_of(host):
                return
            time.sleep(0.05)


def _install(
    host: SshHost, versions: Collection[str], unhealthy: Collection[tuple[str, str, str]]
) -> None:
    root = host.root
    for entry in list(root.iterdir()) if root.exists() else []:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    for sub in ("bin", "units", "run", "logs", "releases"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    calls = root / "calls.log"
    calls.touch()
    calls.chmod(0o666)  # root and the deploy user both call systemctl
    systemctl = root / "bin" / "systemctl"
    shutil.copyfile(SYSTEMCTL, systemctl)
    systemctl.chmod(0o755)
    busybox = _busybox()
    for unit, port in PORTS.items():
        (root / "units" / unit).write_text(
            f'{busybox} httpd -f -p {port} -h "$HOME/current/www/{unit}"\n'
        )
    for version in versions:
        release = root / "releases" / version
        release.mkdir()
        (release / "VERSION").write_text(f"{version}\n")
        for unit in UNITS:
            www = release / "www" / unit
            www.mkdir(parents=True)
            if not any(
                v == version and h in (ANY, host.name) and u in (ANY, unit) for v, h, u in unhealthy
            ):
                (www / "health").write_text(json.dumps({"version": version}) + "\n")


@dataclass
class SshApp:
    info: SshHostsInfo
    versions: tuple[str, ...]

    @property
    def hosts(self) -> list[SshHost]:
        return self.info.hosts

    def _host(self, host: SshHost | str) -> SshHost:
        return self.info.host(host) if isinstance(host, str) else host

    def settings(self, **overrides: Any) -> dict[str, Any]:
        """The ssh target's settings for these hosts, updated with `overrides`."""
        settings: dict[str, Any] = {
            "kind": "ssh",
            "hosts": [h.address for h in self.hosts],
            "user": self.info.user,
            "identity_file": str(self.info.client_key),
            "known_hosts": self.info.known_hosts,
            "services": list(UNITS),
            "deploy_steps": ["ln -sfn releases/{version} current"],
            "version_file": "current/VERSION",
            "health_checks": {
                unit: [
                    {
                        "kind": "http",
                        "url": f"http://{{host}}:{port}/health",
                        "version_field": "version",
                        "deadline_seconds": 3,
                    }
                ]
                for unit, port in PORTS.items()
            },
            "command_timeout_seconds": 30,
            "connect_timeout_seconds": 5,
        }
        return settings | overrides

    def answering(self, host: SshHost | str, unit: str) -> str | None:
        """The version the unit's /health answers on the host, or None (no answer, not 200)."""
        url = f"http://{self._host(host).address}:{PORTS[unit]}/health"
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code != 200:
                return None
            return str(response.json()["version"])
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return None

    def events(self, host: SshHost | str) -> list[tuple[float, str, str]]:
        """(time, start|stop, unit) for every start and stop on the host, in order."""
        try:
            lines = (self._host(host).root / "events.log").read_text().splitlines()
        except FileNotFoundError:
            return []
        return [(float(t), what, unit) for t, what, unit in (line.split() for line in lines)]

    def down_intervals(
        self, host: SshHost | str, units: Collection[str] = UNITS
    ) -> list[tuple[float, float]]:
        """(from, to) spans in which one of `units` was stopped, once all had run (per
        events.log); `to` is infinity while one still is."""
        running: set[str] = set()
        spans: list[tuple[float, float]] = []
        down_since: float | None = None
        was_up = False
        for when, what, unit in self.events(host):
            if what == "start":
                running.add(unit)
            else:
                running.discard(unit)
            if running >= set(units):
                was_up = True
                if down_since is not None:
                    spans.append((down_since, when))
                    down_since = None
            elif was_up and down_since is None:
                down_since = when
        if down_since is not None:
            spans.append((down_since, math.inf))
        return spans

    def live(self, host: SshHost | str) -> str | None:
        """What the host's `current/VERSION` says, or None."""
        try:
            return (self._host(host).root / "current" / "VERSION").read_text().strip()
        except OSError:
            return None

    def unit_pids(self, host: SshHost | str) -> dict[str, int | None]:
        """Each unit's running process, or None when it is not running."""
        root = self._host(host).root
        pids: dict[str, int | None] = {}
        for unit in UNITS:
            try:
                pid = int((root / "run" / f"{unit}.pid").read_text())
                stat = Path(f"/proc/{pid}/stat").read_text()
                running = stat[stat.rindex(")") + 2 :].split()[0] != "Z"
            except (OSError, ValueError):
                pid, running = 0, False
            pids[unit] = pid if running else None
        return pids

    def remove(self) -> None:
        """Stop every process the app runs on every host."""
        for host in self.hosts:
            _stop_processes(host)


def create_ssh_app(
    info: SshHostsInfo,
    *,
    versions: Collection[str] = VERSIONS,
    unhealthy: Collection[tuple[str, str, str]] = (),
) -> SshApp:
    """Reset every host (healed, the previous app stopped, HOME emptied) and install the app."""
    for host in info.hosts:
        info.heal(host)
        _stop_processes(host)
        _install(host, versions, unhealthy)
    return SshApp(info, tuple(versions))
