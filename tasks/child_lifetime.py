"""Child processes that die with Slipway, even when Slipway is killed with SIGKILL.

A `pg_restore` orphaned by a killed restore would go on filling a database nobody will
swap in. On Linux the kernel can signal a child when its parent ends (PR_SET_PDEATHSIG).
Setting it from `preexec_fn` would run Python code between fork and exec in a process
full of threads, which can deadlock; a small separate interpreter sets it and then
becomes the real command with `exec` (the setting survives exec). It checks that its
parent still lives, since a parent that died before the setting would never signal.
"""

from __future__ import annotations

import os
import sys

PR_SET_PDEATHSIG = 1
_TIE = (
    "import ctypes, os, signal, sys\n"
    f"ctypes.CDLL(None).prctl({PR_SET_PDEATHSIG}, int(signal.SIGKILL))\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    os._exit(1)\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


def tied_to_parent(argv: list[str]) -> list[str]:
    """`argv`, run so that it is killed when this process ends (Linux; elsewhere as is).

    The kernel signals when the *thread* that started the child ends: start it from a
    thread that outlives it (one that waits for it).
    """
    if not sys.platform.startswith("linux"):
        return argv
    return [sys.executable, "-I", "-S", "-c", _TIE, str(os.getpid()), *argv]
