"""The local Prefect API of one PREFECT_HOME, shared by every `slipway` command that runs there.

Without PREFECT_API_URL, Prefect would start a temporary server in each process, all on one
SQLite file: noisy, and they lock each other out when commands overlap. Instead the first
command starts one server in the background (deployments.local_api_server) and later
commands find it; it stops by itself once no command has used it for a while.

The server asks for a random password (Basic auth; /health stays open), so other users of
the host cannot read the blocks' secrets through it. The files, all in PREFECT_HOME:
`slipway-api.json` (the running server's URL, pid and password; mode 0600),
`slipway-api.lock` (held while a command finds or starts the server, and by the server
while it stops), `slipway-api.users` (each command holds a shared lock on it while it
runs; the server stops only when it can take it exclusively), `slipway-api.log` (the
server's logs). The history is Prefect's own database there, `prefect.db` by default.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal, overload

from blocks.errors import SlipwayError

IDLE_ENV = "SLIPWAY_LOCAL_API_IDLE_SECONDS"
DEFAULT_IDLE_SECONDS = 600.0
START_TIMEOUT_ENV = "SLIPWAY_LOCAL_API_START_TIMEOUT"
DEFAULT_START_TIMEOUT = 180.0  # a first start migrates the database: slow on a busy host
LOG_ROTATE_BYTES = 10 * 1024 * 1024
# The server's environment: Prefect's settings and what Python needs, never the command's
# credentials (PGPASSWORD, AWS_*...): the server outlives the command.
PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "VIRTUAL_ENV")
NOT_PASSED_PREFECT = ("PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_API_AUTH_STRING")

_held: list[IO[bytes]] = []  # this process's shared lock on the users file, until it exits


@dataclass(frozen=True)
class LocalApiFiles:
    """Where the shared local API keeps its state in one PREFECT_HOME."""

    home: Path

    @property
    def state(self) -> Path:
        return self.home / "slipway-api.json"

    @property
    def start_lock(self) -> Path:
        return self.home / "slipway-api.lock"

    @property
    def users(self) -> Path:
        return self.home / "slipway-api.users"

    @property
    def log(self) -> Path:
        return self.home / "slipway-api.log"


def idle_seconds() -> float:
    """How long the server waits with no command using it before it stops."""
    return _seconds(IDLE_ENV, DEFAULT_IDLE_SECONDS)


def _seconds(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    try:
        return max(float(raw), 0.0) if raw else default
    except ValueError:
        raise SlipwayError(
            f"{name}={raw!r} is not a number at the environment: give seconds, e.g. {default:g}"
        ) from None


def read_state(files: LocalApiFiles) -> dict[str, object] | None:
    """The running server's {"url", "pid", "auth"} as it wrote them, or None."""
    try:
        state = json.loads(files.state.read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


@contextlib.contextmanager
def flocked(path: Path, mode: int, timeout: float, what: str) -> Iterator[IO[bytes]]:
    """`path` opened and flock'ed (LOCK_SH or LOCK_EX), waiting at most `timeout` seconds."""
    handle = path.open("ab")
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, mode | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise SlipwayError(
                        f"{what} is still busy after {timeout:g} s at {path}: wait for the "
                        "other slipway command, or stop the process holding it (`fuser "
                        f"{path}`)"
                    ) from None
                time.sleep(0.1)
        yield handle
    finally:
        handle.close()


@overload
def use_local_api(verbose: bool, start: Literal[True] = True) -> str: ...
@overload
def use_local_api(verbose: bool, start: bool) -> str | None: ...


def use_local_api(verbose: bool, start: bool = True) -> str | None:
    """Point this process's Prefect client at the shared local API of PREFECT_HOME, starting
    it when none answers (unless not `start`: then None); return its URL. This process counts
    as a user until it exits."""
    from prefect.context import refresh_global_settings_context
    from prefect.settings import get_current_settings

    files = LocalApiFiles(get_current_settings().home.expanduser().resolve())
    start_timeout = _seconds(START_TIMEOUT_ENV, DEFAULT_START_TIMEOUT)
    try:
        files.home.mkdir(parents=True, exist_ok=True)
        if not _held:
            # Before the start lock, as the server takes them in the other order: a server
            # stopping holds both, and this waits until it is gone.
            with flocked(files.users, fcntl.LOCK_SH, 60, "the local Prefect API's stop") as users:
                _held.append(os.fdopen(os.dup(users.fileno()), "ab"))
            os.utime(files.users)  # the server counts its idle time from the last user
        with flocked(files.start_lock, fcntl.LOCK_EX, start_timeout + 30, "the local Prefect API"):
            found = _found(files)
            started = found is None
            if found is None and not start:
                return None
            url, auth = found or _start(files, start_timeout)
    except OSError as exc:
        raise SlipwayError(
            f"the local Prefect API cannot use {files.home} ({exc.strerror or exc}) at "
            "PREFECT_HOME: give a directory this user can write, or set PREFECT_API_URL"
        ) from None
    os.environ["PREFECT_API_URL"] = url
    os.environ["PREFECT_API_AUTH_STRING"] = auth
    refresh_global_settings_context()  # Prefect read its settings at import
    if verbose:
        verb = "started" if started else "shared"
        print(
            f"local Prefect API {verb} at {url} (history in {files.home}, its log {files.log})",
            file=sys.stderr,
        )
    return url


def _found(files: LocalApiFiles, pid: int | None = None) -> tuple[str, str] | None:
    """The URL and password of this home's running server (of `pid`, when given) when it
    answers, else None."""
    from deployments.cli_common import http_status

    state = read_state(files) or {}
    url, auth, running = state.get("url"), state.get("auth"), state.get("pid")
    if not isinstance(url, str) or not isinstance(auth, str) or not isinstance(running, int):
        return None
    if pid not in (None, running) or not _alive(running):
        return None
    return (url, auth) if http_status(f"{url}/health") == 200 else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _start(files: LocalApiFiles, timeout: float) -> tuple[str, str]:
    """Start the server in the background, detached from this command; its URL and password
    once it answers."""
    files.state.unlink(missing_ok=True)
    if files.log.exists() and files.log.stat().st_size > LOG_ROTATE_BYTES:
        files.log.replace(files.log.with_suffix(".log.1"))
    with files.log.open("ab") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "deployments.local_api_server"],
            cwd=files.home,
            env=_server_env(files.home),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # a Ctrl-C or a cron job's end must not stop it
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SlipwayError(
                f"the local Prefect API stopped as it started (exit {server.returncode}) at "
                f"{files.home}: see {files.log}, or set PREFECT_API_URL to a Prefect server"
            )
        if found := _found(files, server.pid):
            return found
        time.sleep(0.2)
    server.kill()
    server.wait()
    files.state.unlink(missing_ok=True)
    raise SlipwayError(
        f"the local Prefect API did not answer within {timeout:g} s at {files.home}: see "
        f"{files.log}, raise {START_TIMEOUT_ENV}, or set PREFECT_API_URL to a Prefect server"
    )


def _server_env(home: Path) -> dict[str, str]:
    import deployments

    env = {k: v for k, v in os.environ.items() if k in PASSED_ENV}
    env |= {
        k: v
        for k, v in os.environ.items()
        if k.startswith("PREFECT_") and k not in NOT_PASSED_PREFECT
    }
    # Where this `deployments` package lives, for a run from a clone that is not installed.
    source = str(Path(deployments.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")]))
    env |= {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_SERVER_API_AUTH_STRING": f"slipway:{secrets.token_urlsafe(24)}",
        IDLE_ENV: f"{idle_seconds():g}",
    }
    return env
