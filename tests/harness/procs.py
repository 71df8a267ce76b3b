"""Process plumbing for the test harness: free ports, managed children, stale cleanup.

Every service the harness starts runs in its own process group (so a Ctrl-C sent to the
terminal reaches pytest, not the services, and the harness decides the shutdown order),
and its pid is written under the session directory. A later session kills whatever a
dead session left behind, so even a `kill -9` of pytest cannot leave services running
for long. Services keep their files in the session directory (their TMPDIR is there too);
the few paths a service cannot be told to move are listed beside its pid file and removed
after it stops, by this session or by the one that reaps it.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

SESSION_PREFIX = "slipway-test-"
OWNER_FILE = "owner.pid"
PIDS_DIR = "pids"
TMP_DIR = "tmp"


class ServiceUnavailable(RuntimeError):
    """A service cannot run on this machine; the message says how to get it."""


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ephemeral_low() -> int:
    """Where the kernel starts picking ports for outgoing connections."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port(*, also_free_offsets: Sequence[int] = (), low: int = 20000) -> int:
    """A free TCP port on 127.0.0.1; `also_free_offsets` must be free too (SeaweedFS's +10000).

    The port and its offsets stay below the kernel's ephemeral range: there, any outgoing
    connection (a test's 32 S3 connections, say) could take one before the server binds it.
    """
    high = _ephemeral_low() - 1 - max(also_free_offsets, default=0)
    for _ in range(500):
        port = random.randint(low, high)  # noqa: S311 - not security relevant
        if all(port_is_free(port + off) for off in (0, *also_free_offsets)):
            return port
    raise RuntimeError("no free TCP port found on 127.0.0.1")


def wait_until(
    check: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    proc: ManagedProcess | None = None,
    interval: float = 0.2,
) -> None:
    """Poll `check` until it is true; fail early if `proc` died, with its log tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.poll()}\n{proc.log_tail()}")
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(interval)
    tail = proc.log_tail() if proc is not None else ""
    raise RuntimeError(f"{what}: not ready after {timeout:.0f} s\n{tail}")


def _pgid_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_group(
    pgid: int,
    *,
    term_timeout: float,
    reap: Callable[[], object] = lambda: None,
    stop_signal: signal.Signals = signal.SIGTERM,
) -> None:
    """Send `stop_signal` to a process group, then SIGKILL what is left after `term_timeout`.

    `reap` collects our own exited child, which would otherwise linger as a zombie and keep
    the group looking alive.
    """

    def alive() -> bool:
        reap()
        return _pgid_alive(pgid)

    with contextlib.suppress(ProcessLookupError):
        if term_timeout > 0:
            os.killpg(pgid, stop_signal)
            deadline = time.monotonic() + term_timeout
            while time.monotonic() < deadline and alive():
                time.sleep(0.05)
        if alive():
            os.killpg(pgid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and alive():
        time.sleep(0.05)


def session_tmp(session_dir: Path) -> Path:
    """The session's temporary directory, the TMPDIR of every service (sticky, like /tmp)."""
    tmp = session_dir / TMP_DIR
    if not tmp.is_dir():
        tmp.mkdir(parents=True, exist_ok=True)
        tmp.chmod(0o1777)
    return tmp


def _socket_in_use(path: Path) -> bool:
    """Whether a live socket is bound to this path (another server may reuse a port's name)."""
    try:
        table = Path("/proc/net/unix").read_text()
    except OSError:
        return False
    return any(line.split()[-1] == str(path) for line in table.splitlines()[1:] if line.split())


def remove_leftovers(paths: Sequence[Path]) -> None:
    """Remove files a stopped service left outside the session directory."""
    for path in paths:
        with contextlib.suppress(OSError):
            if path.is_socket() and _socket_in_use(path):
                continue
            path.unlink()


def _recorded_stop(pid_file: Path) -> dict[str, Any]:
    """kill_group's arguments for a dead session's service: its own stop, briefly."""
    try:
        name, timeout = pid_file.with_suffix(".stop").read_text().split()
        return {"stop_signal": signal.Signals[name], "term_timeout": min(float(timeout), 10.0)}
    except (OSError, ValueError, KeyError):
        return {"term_timeout": 0}


def _leftovers_listed(pid_file: Path) -> list[Path]:
    try:
        return [Path(p) for p in pid_file.with_suffix(".leftovers").read_text().splitlines() if p]
    except OSError:
        return []


class ManagedProcess:
    """A service process in its own process group, logged to a file, recorded by pid.

    `user` runs it as that system user (the harness being root), with no wrapper process
    that could kill it before its own shutdown finishes. `leftovers` are paths outside the
    session directory it creates and cannot be told not to: removed once it stopped.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        session_dir: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        term_timeout: float = 10.0,
        stop_signal: signal.Signals = signal.SIGTERM,
        user: str | None = None,
        leftovers: Sequence[Path] = (),
    ) -> None:
        self.name = name
        self.term_timeout = term_timeout
        self.stop_signal = stop_signal
        self.leftovers = list(leftovers)
        self.log_path = session_dir / "logs" / f"{name}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._pid_file = session_dir / PIDS_DIR / f"{name}.pid"
        self._pid_file.parent.mkdir(parents=True, exist_ok=True)
        if self.leftovers:
            self._pid_file.with_suffix(".leftovers").write_text(
                "".join(f"{p}\n" for p in self.leftovers)
            )
        child_env = {
            **(os.environ if env is None else env),
            "TMPDIR": str(session_tmp(session_dir)),
        }
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                list(argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=child_env,
                cwd=cwd,
                start_new_session=True,
                user=user,
                group=user,
                extra_groups=[] if user is not None else None,
            )
        self._pid_file.write_text(str(self.popen.pid))
        # How to stop it cleanly, for a later session reaping this one.
        self._pid_file.with_suffix(".stop").write_text(f"{stop_signal.name} {term_timeout}")

    def poll(self) -> int | None:
        return self.popen.poll()

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        kill_group(
            self.popen.pid,
            term_timeout=self.term_timeout,
            reap=self.popen.poll,
            stop_signal=self.stop_signal,
        )
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)
        remove_leftovers(self.leftovers)
        for suffix in (".leftovers", ".stop", ".pid"):
            self._pid_file.with_suffix(suffix).unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def harness_base() -> Path:
    """Where sessions live: $SLIPWAY_TEST_TMP, else slipway-tests in the temporary directory."""
    explicit = os.environ.get("SLIPWAY_TEST_TMP")
    return Path(explicit) if explicit else Path(tempfile.gettempdir()) / "slipway-tests"


def new_session_dir(base: Path) -> Path:
    """Create this session's directory, after reaping what dead sessions left behind."""
    reap_stale_sessions(base)
    session = None
    while session is None:
        base.mkdir(parents=True, exist_ok=True)
        # A session ending meanwhile may remove the empty base before mkdtemp: try again.
        with contextlib.suppress(FileNotFoundError):
            session = Path(tempfile.mkdtemp(prefix=SESSION_PREFIX, dir=base))
    # Services that drop privileges (PostgreSQL as `postgres`) must traverse this directory.
    session.chmod(0o755)
    (session / OWNER_FILE).write_text(str(os.getpid()))
    return session


def reap_stale_sessions(base: Path) -> list[str]:
    """Kill the services of sessions whose pytest is gone, and delete their directories."""
    reaped: list[str] = []
    if not base.is_dir():
        return reaped
    for session in base.glob(f"{SESSION_PREFIX}*"):
        try:
            owner = int((session / OWNER_FILE).read_text())
        except (OSError, ValueError):
            owner = 0
        if owner and _pid_alive(owner):
            continue
        for pid_file in sorted((session / PIDS_DIR).glob("*.pid")):
            with contextlib.suppress(OSError, ValueError):
                kill_group(int(pid_file.read_text()), **_recorded_stop(pid_file))
                reaped.append(pid_file.stem)
            remove_leftovers(_leftovers_listed(pid_file))
        remove_tree(session)
    return reaped


def unmount_under(path: Path) -> None:
    """Unmount whatever a service left mounted under `path` (dockerd's network namespace)."""
    if os.geteuid() != 0 or not shutil.which("umount"):
        return
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    inside = [m for m in mounts if m == str(path) or m.startswith(f"{path}/")]
    for mount in sorted(inside, reverse=True):
        subprocess.run(["umount", "-l", mount], check=False, capture_output=True)


def remove_tree(path: Path) -> None:
    """Remove a session directory, unmounting anything a service left mounted under it."""
    if not path.exists():
        return
    unmount_under(path)
    shutil.rmtree(path, ignore_errors=True)


def remove_base_if_empty(base: Path) -> None:
    """Remove the sessions' base directory once no session is left in it."""
    with contextlib.suppress(OSError):
        base.rmdir()


def is_root() -> bool:
    return os.geteuid() == 0
