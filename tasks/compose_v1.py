"""Compose v1 (`docker-compose`, a Python program) commands as forks of one warm process.

A v1 command spends most of its second importing Compose before it talks to the engine,
and a release runs several in a row (`config`, then `up` per service). `WarmComposeV1`
starts the script's own interpreter once, imports Compose there, and forks it per command:
each command still runs in a fresh process with its own arguments, environment, working
directory and exit status, as `docker-compose` would. Compose v2 is a Go binary and needs
none of this. When the script is not a Python v1 entry point, `start` returns None and
commands run as plain processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import IO

# Runs in the script's interpreter: one JSON request per line on stdin; per request it
# answers {"pid": ...} once forked, then {"code": ...} when the command has ended.
SERVER = r"""
import json, os, sys
sys.argv = ["docker-compose"]
from compose.cli.main import main
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    req = json.loads(line)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(os.open(req["stdout"], os.O_WRONLY), 1)
            os.dup2(os.open(req["stderr"], os.O_WRONLY), 2)
            os.chdir(req["cwd"])
            os.environ.clear()
            os.environ.update(req["env"])
            sys.argv = ["docker-compose", *req["args"]]
            try:
                main()
                code = 0
            except SystemExit as exc:
                if isinstance(exc.code, str):
                    print(exc.code, file=sys.stderr)
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            import traceback
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    print(json.dumps({"pid": pid}), flush=True)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"code": os.waitstatus_to_exitcode(status)}), flush=True)
"""

START_TIMEOUT = 30.0


def python_entry_point(command: str) -> str | None:
    """The interpreter of a `docker-compose` script with a Python shebang, else None."""
    path = shutil.which(command)
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            first = f.readline(200).decode(errors="replace")
    except OSError:
        return None
    if not first.startswith("#!") or "python" not in first:
        return None
    interpreter = first[2:].split()  # not empty: it holds "python"
    # `#!/usr/bin/env python3` names the interpreter second.
    if Path(interpreter[0]).name == "env" and len(interpreter) > 1:
        return shutil.which(interpreter[1])
    return interpreter[0]


class WarmComposeV1:
    """One warm Compose v1 process; `run` forks it per command. Thread-safe, one at a time."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self._proc = proc
        self._lock = threading.Lock()
        # Forgotten without close(): the process still leaves once its stdin closes.
        self._closer = weakref.finalize(self, _close, proc)

    @classmethod
    def start(cls, command: str = "docker-compose") -> WarmComposeV1 | None:
        """Start the warm process for `command`; None when it is not a Python Compose v1."""
        interpreter = python_entry_point(command)
        if interpreter is None:
            return None
        try:
            proc = subprocess.Popen(
                [interpreter, "-c", SERVER],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                cwd="/",
                # Unbuffered: `select` must see every answer line that has not been read
                # yet, which a buffered reader could hold back after reading ahead.
                bufsize=0,
            )
        except OSError:
            return None
        warm = cls(proc)
        if warm._answer(START_TIMEOUT).get("ready") is not True:
            warm.close()
            return None
        return warm

    def _answer(self, timeout: float | None) -> dict[str, int | bool]:
        """The server's next answer; {} when it died or said nothing within `timeout`."""
        out = self._proc.stdout
        assert out is not None
        ready, _, _ = select.select([out], [], [], timeout)
        if not ready:
            return {}
        line = out.readline()
        try:
            answer: dict[str, int | bool] = json.loads(line) if line else {}
        except ValueError:
            return {}
        return answer

    def run(
        self, args: list[str], *, cwd: Path, env: dict[str, str], timeout: float
    ) -> subprocess.CompletedProcess[str]:
        """`docker-compose ARGS` in a fork: like `subprocess.run(..., capture_output=True)`.

        Raises `subprocess.TimeoutExpired` (the command killed) like subprocess.run, and
        `OSError` when the warm process is gone (the command, if it started, killed).
        """
        with self._lock, contextlib.ExitStack() as stack:
            out = stack.enter_context(tempfile.NamedTemporaryFile(prefix="compose-out-"))
            err = stack.enter_context(tempfile.NamedTemporaryFile(prefix="compose-err-"))
            request = {
                "args": args,
                "cwd": str(cwd),
                "env": env,
                "stdout": out.name,
                "stderr": err.name,
            }
            stdin = self._proc.stdin
            assert stdin is not None
            try:
                stdin.write(json.dumps(request).encode() + b"\n")
                stdin.flush()
            except (BrokenPipeError, ValueError) as exc:
                raise OSError("the warm docker-compose process has exited") from exc
            forked = self._answer(START_TIMEOUT)
            if "pid" not in forked:
                raise OSError("the warm docker-compose process did not fork the command")
            deadline = time.monotonic() + timeout
            ended = self._answer(timeout)
            if "code" not in ended:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(forked["pid"]), signal.SIGKILL)
                if time.monotonic() < deadline:
                    raise OSError("the warm docker-compose process died during the command")
                self._answer(5)
                raise subprocess.TimeoutExpired(["docker-compose", *args], timeout)
            return subprocess.CompletedProcess(
                ["docker-compose", *args],
                int(ended["code"]),
                stdout=_text(out),
                stderr=_text(err),
            )

    def close(self) -> None:
        """End the warm process."""
        self._closer()


def _close(proc: subprocess.Popen[bytes]) -> None:
    """Close the warm process's stdin, which ends it, and reap it."""
    with contextlib.suppress(OSError, ValueError):
        if proc.stdin:
            proc.stdin.close()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout:
        proc.stdout.close()


def _text(f: IO[bytes]) -> str:
    f.seek(0)
    return f.read().decode(errors="replace")
