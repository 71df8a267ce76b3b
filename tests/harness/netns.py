"""Network namespaces for test hosts: a veth pair each, 10.200.N.0/24, and their cleanup.

A namespace is named `slw<owner pid>-h<i>-n<N>` and its root-side link `vethslw<N>`, so a
later session can tell whose it was (the owner's pid) and reap it once the owner is gone.
N is chosen under a lock shared by every session on the machine, among the /24s no link
uses. Run as a script, this module is a guard: it waits for its owner to die (or for
SIGTERM, the harness's stale-session reaper) and then removes the namespaces it was given.
Only the standard library here, so the guard starts fast.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

PREFIX = "slw"
LINK_PREFIX = "vethslw"  # "veth...": the leftovers test leaves other sessions' veths alone
# In /run, not /tmp: a test in a private /tmp (the leftovers demo) shares the same netns.
LOCK_FILE = Path("/run/lock/slipway-netns.lock")
NAME = re.compile(rf"^{PREFIX}(\d+)-h(\d+)-n(\d+)$")
ADDRESS = re.compile(r"\b10\.200\.(\d+)\.\d+/")


@dataclass(frozen=True)
class Namespace:
    name: str
    link: str  # the root side of the veth pair
    subnet: int  # N of 10.200.N.0/24

    @property
    def address(self) -> str:
        return f"10.200.{self.subnet}.2"

    @property
    def gateway(self) -> str:
        return f"10.200.{self.subnet}.1"


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def in_ns(
    ns: str, argv: Sequence[str], *, check: bool = False, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run a command inside a namespace (output captured as text)."""
    return subprocess.run(
        ["ip", "netns", "exec", ns, *argv],
        capture_output=True,
        text=True,
        check=check,
        timeout=timeout,
    )


@contextlib.contextmanager
def _allocation_lock() -> Iterator[None]:
    LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    with LOCK_FILE.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _subnets_in_use() -> set[int]:
    used = {int(n) for n in ADDRESS.findall(ip("-o", "addr").stdout)}
    used |= {int(n) for n in ADDRESS.findall(ip("route").stdout)}
    for name in list_namespaces():
        match = NAME.match(name)
        if match:
            used.add(int(match.group(3)))
    return used


def list_namespaces() -> list[str]:
    run_netns = Path("/run/netns")
    return sorted(os.listdir(run_netns)) if run_netns.is_dir() else []


def create(owner: int, count: int) -> list[Namespace]:
    """`count` namespaces with a veth pair each, addressed and up (lo too)."""
    made: list[Namespace] = []
    try:
        with _allocation_lock():
            used = _subnets_in_use()
            free = [n for n in range(1, 255) if n not in used]
            if len(free) < count:
                raise RuntimeError(f"no free 10.200.N.0/24 left for {count} hosts")
            for i, subnet in enumerate(free[:count], start=1):
                ns = Namespace(f"{PREFIX}{owner}-h{i}-n{subnet}", f"{LINK_PREFIX}{subnet}", subnet)
                ip("netns", "add", ns.name)
                made.append(ns)
                ip("link", "add", ns.link, "type", "veth", "peer", "name", "eth0", "netns", ns.name)
                ip("addr", "add", f"{ns.gateway}/24", "dev", ns.link)
                ip("link", "set", ns.link, "up")
                for args in (
                    ["ip", "addr", "add", f"{ns.address}/24", "dev", "eth0"],
                    ["ip", "link", "set", "eth0", "up"],
                    ["ip", "link", "set", "lo", "up"],
                ):
                    in_ns(ns.name, args, check=True)
    except BaseException:
        for ns in made:
            remove(ns.name)
        raise
    return made


def pids(ns: str) -> list[int]:
    out = ip("netns", "pids", ns, check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie does not: nobody may reap it soon)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2 :].split()[0] != "Z"


def kill_all(ns: str, *, keep: Sequence[int] = (), term_timeout: float = 3.0) -> None:
    """SIGTERM every process in the namespace (but `keep`), then SIGKILL what is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        targets = [p for p in pids(ns) if p not in keep]
        for pid in targets:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + term_timeout
        while time.monotonic() < deadline and any(_alive(p) for p in targets):
            time.sleep(0.05)


def remove(name: str) -> None:
    """Kill what runs in the namespace, delete it and its root-side link (idempotent)."""
    match = NAME.match(name)
    if name in list_namespaces():
        kill_all(name)
        ip("netns", "delete", name, check=False)
    if match:
        # The kernel frees a namespace (and its veth pair) asynchronously: delete it now.
        link = f"{LINK_PREFIX}{match.group(3)}"
        if Path("/sys/class/net", link).exists():
            ip("link", "delete", link, check=False)


def _owner_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_stale() -> list[str]:
    """Remove the namespaces whose owner process is gone."""
    stale = [
        name
        for name in list_namespaces()
        if (match := NAME.match(name)) and not _owner_alive(int(match.group(1)))
    ]
    for name in stale:
        remove(name)
    return stale


def guard(owner: int, names: Sequence[str]) -> None:
    """Remove `names` once `owner` is gone or on SIGTERM/SIGINT."""

    def stop(signum: int, frame: FrameType | None) -> None:
        del signum, frame
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        while _owner_alive(owner):
            time.sleep(1)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for name in names:
            remove(name)


if __name__ == "__main__":
    guard(int(sys.argv[1]), sys.argv[2:])
