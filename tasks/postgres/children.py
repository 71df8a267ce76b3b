"""Child processes that die with Slipway, even when Slipway is killed with SIGKILL.

A `pg_restore` orphaned by a killed restore would go on filling a database nobody will
swap in, and so would each of its `-j` workers, which it forks (a fork does not inherit
the kernel's parent-death signal). So the command runs under a small supervisor, a
separate single-threaded interpreter:
- the kernel sends it SIGTERM when Slipway ends (PR_SET_PDEATHSIG), however Slipway ends;
- it starts the command in a process group of its own, and on SIGTERM or SIGINT kills
  that whole group (the command and every worker) before it exits;
- otherwise it waits for the command and exits with its status.
Setting the signal from `preexec_fn` inside Slipway instead would run Python between fork
and exec in a process full of threads, which can deadlock; in the supervisor it is safe.
To stop such a child, send it SIGTERM (`terminate()`), not SIGKILL: the supervisor must
live to kill its group.
"""

from __future__ import annotations

import os
import sys

PR_SET_PDEATHSIG = 1
_SUPERVISE = f"""\
import ctypes, os, signal, subprocess, sys

libc = ctypes.CDLL(None)
group = []

def stop(signum, frame):
    for pid in group:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    raise SystemExit(128 + signum)  # out of child.wait(); the exit status says which

signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
libc.prctl({PR_SET_PDEATHSIG}, int(signal.SIGTERM))
if os.getppid() != int(sys.argv[1]):
    sys.exit(1)  # the parent died before the setting: no signal would ever come
child = subprocess.Popen(
    sys.argv[2:],
    start_new_session=True,
    # Single-threaded here, so safe: the command dies with this supervisor, even if that
    # comes before its pid is in `group`.
    preexec_fn=lambda: libc.prctl({PR_SET_PDEATHSIG}, int(signal.SIGKILL)),
)
group.append(child.pid)
code = child.wait()
try:
    os.killpg(child.pid, signal.SIGKILL)  # a worker the command left behind
except ProcessLookupError:
    pass
sys.exit(code if code >= 0 else 128 - code)
"""


def tied_to_parent(argv: list[str]) -> list[str]:
    """`argv`, run so that it and every process it forks are killed when this process ends
    (Linux; elsewhere as is). Stop it with SIGTERM.

    The kernel signals when the *thread* that started the child ends: start it from a
    thread that outlives it (one that waits for it).
    """
    if not sys.platform.startswith("linux"):
        return argv
    return [sys.executable, "-I", "-S", "-c", _SUPERVISE, str(os.getpid()), *argv]
