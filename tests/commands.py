"""Running commands from tests: `slipway` and others, with exactly the environment given."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SLIPWAY = [sys.executable, "-m", "deployments.cli"]


def run(
    argv: Sequence[str], env: Mapping[str, str], *, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`argv` from the repository's root, its output captured as text; never raises on a
    non-zero exit (tests assert on it)."""
    return subprocess.run(
        list(argv),
        env=dict(env),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def slipway(*args: str, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the `slipway` command line with exactly this environment."""
    return run([*SLIPWAY, *args], env)


def start_slipway(*args: str, env: Mapping[str, str]) -> subprocess.Popen[str]:
    """`slipway ARGS` in the background, in its own process group (a test may kill the
    whole group), its output discarded."""
    return subprocess.Popen(
        [*SLIPWAY, *args],
        cwd=REPO,
        env=dict(env),
        text=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
