"""The shared local Prefect API of one PREFECT_HOME (see deployments.local_api).

`slipway` starts it as `python -m deployments.local_api_server`, detached, in PREFECT_HOME;
it serves Prefect's API (as Prefect's own temporary server does: no UI, the services an
ephemeral server runs) on a free loopback port until no command has used it for the idle
period, or its PREFECT_HOME is removed, then stops.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import IO

import uvicorn

from blocks.errors import SlipwayError
from deployments.local_api import DEFAULT_IDLE_SECONDS, LocalApiFiles, idle_seconds, read_state

_stopping: list[IO[bytes]] = []  # the locks held from the decision to stop until the exit


def main() -> None:
    """Serve until idle."""
    files = LocalApiFiles(Path(os.environ["PREFECT_HOME"]))
    try:
        idle = idle_seconds()
    except SlipwayError:
        idle = DEFAULT_IDLE_SECONDS
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))  # bound here and handed over: no race for the port
    listener.listen(128)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/api"

    from prefect.server.api.server import create_app
    from prefect.settings import get_current_settings

    config = uvicorn.Config(
        create_app(ephemeral=True, final=True),
        lifespan="on",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=10,
    )
    server = _Server(config, files)
    # The password the starting command chose (PREFECT_SERVER_API_AUTH_STRING), as Prefect read it.
    auth = get_current_settings().server.api.auth_string
    if auth is None:
        raise SystemExit("the local Prefect API needs a password: start it through `slipway`")
    state = {"url": url, "pid": os.getpid(), "auth": auth.get_secret_value()}
    tmp = files.state.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
        json.dump(state, out)  # the password: for this user only
    tmp.replace(files.state)
    threading.Thread(target=_stop_when_idle, args=(server, files, idle), daemon=True).start()
    _log(f"serving {files.home} at {url} (pid {os.getpid()}), until {idle:g} s without a command")
    try:
        server.run(sockets=[listener])
    finally:
        server.withdraw()


class _Server(uvicorn.Server):
    """uvicorn's server, withdrawing its URL once stopped: after a SIGTERM, uvicorn ends the
    process as soon as `run` returns, before any `finally`."""

    def __init__(self, config: uvicorn.Config, files: LocalApiFiles) -> None:
        super().__init__(config)
        self.files = files
        self.withdrawn = False

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().shutdown(sockets)
        finally:
            self.withdraw()

    def withdraw(self) -> None:
        """Remove the URL file (when still this server's) and log the stop, once."""
        if self.withdrawn:
            return
        self.withdrawn = True
        state = read_state(self.files)
        if state is not None and state.get("pid") == os.getpid():
            self.files.state.unlink(missing_ok=True)
        _log("stopped")


def _log(message: str) -> None:
    """A line in the log (this process's stderr, PREFECT_HOME/slipway-api.log)."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    print(f"{stamp} slipway local Prefect API: {message}", file=sys.stderr, flush=True)


def _stop_when_idle(server: uvicorn.Server, files: LocalApiFiles, idle: float) -> None:
    """Ask the server to stop once no command has used it for `idle` seconds."""
    poll = min(1.0, max(idle / 5, 0.1))
    last_used = time.time()
    while not server.should_exit:
        time.sleep(poll)
        if not files.home.is_dir():  # removed (a test session's end, say): nothing to serve
            server.should_exit = True
            return
        try:
            if _in_use(files):
                last_used = time.time()
                continue
            # A command that came and went between two polls.
            last_used = max(last_used, files.users.stat().st_mtime)
            if time.time() - last_used >= idle and _claim_stop(files):
                server.should_exit = True
                return
        except OSError:
            continue  # the home going away: seen at the next poll


def _try_lock(path: Path, mode: int) -> IO[bytes] | None:
    handle = path.open("ab")
    try:
        fcntl.flock(handle, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def _in_use(files: LocalApiFiles) -> bool:
    """Whether a command holds its shared lock on the users file now."""
    handle = _try_lock(files.users, fcntl.LOCK_EX)
    if handle is None:
        return True
    handle.close()
    return False


def _claim_stop(files: LocalApiFiles) -> bool:
    """Take both locks and withdraw the URL, unless a command is finding the server or using
    it; the locks stay held until this process exits, so the next command starts a new one
    only once this one is gone."""
    start = _try_lock(files.start_lock, fcntl.LOCK_EX)
    if start is None:
        return False
    users = _try_lock(files.users, fcntl.LOCK_EX)
    if users is None:
        start.close()
        return False
    _stopping.extend([start, users])
    files.state.unlink(missing_ok=True)
    return True


if __name__ == "__main__":
    main()
