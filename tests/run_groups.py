"""Run the test suite as two pytest sessions at once: `make test` (and so CI) uses this.

Most of the suite waits on services (health deadlines, S3, the Prefect API, Docker), so two
sessions side by side finish in about two thirds of the time on two cores. Each session has
its own harness (its own PostgreSQL, S3 and Prefect server on free ports); only the
release group uses Docker, so no two sessions ever start a Docker engine: a file marked
`docker` goes with the releases wherever it is listed (two engines on one bridge answer for
each other's containers). Each group's
output is printed whole when it ends; the exit status fails if either group failed.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import IO

TESTS = Path(__file__).resolve().parent
RELEASES = [
    "test_release.py",
    "test_compose_target.py",
    "test_compose_v1.py",
    "test_rollout_contract.py",
    "test_health.py",
    "test_services_smoke.py",
    "test_deployments.py",
    "test_webhook.py",
    "test_prisma_migrations.py",
    "test_notifiers.py",
    "test_notify_hooks.py",
    "test_rollback_plan.py",
    "test_env_file.py",
    "test_doctor.py",
    "test_leftovers.py",
    "test_prefect_ui.py",
    "test_ssh_harness.py",
    "test_ssh_target.py",
    "test_ssh_release.py",
    "test_kubernetes_target.py",
    "test_kubernetes_flows.py",
    "test_k8s_simulator.py",
    "test_ecs_target.py",
    "test_ecs_simulator.py",
    "test_ecs_release.py",
]


RELEASE_FAULTS = "faults/test_release_"  # the fault suite's release-side files


def uses_docker(file: str) -> bool:
    """Whether a test file is marked `docker` (its module or one of its tests)."""
    return "pytest.mark.docker" in (TESTS / file).read_text()


def groups() -> dict[str, list[str]]:
    """Every test file in exactly one group: releases as listed, backups the rest.

    The fault suite (`tests/faults/`) goes by name: `test_release_*.py` with the releases;
    any file that uses Docker goes with the releases too.
    """
    files = sorted(
        str(p.relative_to(TESTS))
        for p in [*TESTS.glob("test_*.py"), *TESTS.glob("faults/test_*.py")]
    )
    missing = [f for f in RELEASES if f not in files]
    if missing:
        raise SystemExit(f"run_groups: no such test files: {', '.join(missing)}")
    releases = [
        *RELEASES,
        *(
            f
            for f in files
            if f not in RELEASES and (f.startswith(RELEASE_FAULTS) or uses_docker(f))
        ),
    ]
    backups = [f for f in files if f not in releases]
    return {"releases": releases, "backups": backups}


def main() -> int:
    extra = sys.argv[1:]
    running: dict[str, tuple[subprocess.Popen[bytes], IO[bytes], float]] = {}

    def stop(signum: int, frame: FrameType | None) -> None:
        del frame
        for proc, _, _ in running.values():
            proc.send_signal(signal.SIGTERM)  # each session stops its own services
        for proc, _, _ in running.values():
            proc.wait()
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    failed = []
    with contextlib.ExitStack() as stack:
        for name, files in groups().items():
            log = stack.enter_context(tempfile.TemporaryFile())
            proc = subprocess.Popen(
                [sys.executable, "-m", "pytest", *[str(TESTS / f) for f in files], *extra],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            running[name] = (proc, log, time.monotonic())
            print(f"[{name}] started: {len(files)} files", flush=True)
        pending = dict(running)
        while pending:
            for name, (proc, out, started) in list(pending.items()):
                if proc.poll() is None:
                    continue
                del pending[name]
                out.seek(0)
                sys.stdout.write(f"\n===== [{name}] =====\n")
                sys.stdout.write(out.read().decode(errors="replace"))
                verdict = "passed" if proc.returncode == 0 else f"FAILED ({proc.returncode})"
                sys.stdout.write(f"[{name}] {verdict} in {time.monotonic() - started:.0f} s\n")
                sys.stdout.flush()
                if proc.returncode != 0:
                    failed.append(name)
            time.sleep(0.5)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
