"""Release benchmarks on the three-service demo app (real Docker, PostgreSQL, S3, Prefect).

1. Orchestration overhead of a healthy release: `slipway release` (backup excluded) against
   a bare `docker compose up -d` (Compose v2) of the same change plus the wait until the new version
   answers. Goal: at most 10 s more.
2. Recovery of a failed release: from the moment the failing health gate gives up until
   the old version answers again, polled every 50 ms from outside.

Both sides run the same changes in the same run, v1 <-> v2, alternately.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.measure import emit, run_measured
from tests.compose_app import ComposeApp, build_images
from tests.harness import Harness
from tests.harness.docker_engine import DockerInfo
from tests.harness.postgres import PostgresInfo
from tests.harness.prefect_server import PrefectInfo
from tests.harness.s3 import S3Info
from tests.release_env import save_release_environment

REPO = Path(__file__).resolve().parent.parent
OVERHEAD_LIMIT = 10.0
POLL = 0.05


def answering(app: ComposeApp) -> str | None:
    try:
        res = httpx.get(app.api_health_url, timeout=1)
        return str(res.json()["version"]) if res.status_code == 200 else None
    except (httpx.HTTPError, ValueError, KeyError):
        return None


def wait_for_version(app: ComposeApp, version: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while answering(app) != version:
        if time.monotonic() > deadline:
            raise SystemExit(f"{version} never answered at {app.api_health_url}")
        time.sleep(POLL)


def compose_up(app: ComposeApp, version: str, env: dict[str, str]) -> float:
    """The baseline: bring every service to `version` at once, then wait until it answers."""
    started = time.perf_counter()
    subprocess.run(
        ["docker", "compose", "-p", app.project, "up", "-d"],
        cwd=app.directory,
        env=env | {"APP_VERSION": version},
        check=True,
        capture_output=True,
    )
    wait_for_version(app, version)
    return time.perf_counter() - started


def slipway(*args: str, env: dict[str, str]) -> tuple[float, dict[str, Any]]:
    m = run_measured([sys.executable, "-m", "deployments.cli", *args, "--json"], env=env, cwd=REPO)
    if m.returncode != 0:
        raise SystemExit(f"slipway {' '.join(args)} failed: {m.stderr[-2000:]}")
    return m.seconds, json.loads(m.stdout)


def backup_seconds(record: dict[str, Any]) -> float:
    return sum(float(s["seconds"] or 0) for s in record["steps"] if s["name"] == "backup")


def main() -> None:
    repeat = int(os.environ.get("BENCH_REPEAT", "2"))
    harness = Harness()
    try:
        harness.start_async("docker", "postgres", "s3", "prefect")
        docker_info: DockerInfo = harness.require("docker")
        postgres: PostgresInfo = harness.require("postgres")
        s3: S3Info = harness.require("s3")
        prefect: PrefectInfo = harness.require("prefect")
        os.environ["PREFECT_API_URL"] = prefect.api_url
        os.environ["PREFECT_HOME"] = str(prefect.home)
        build_images(docker_info.client())
        root = Path(tempfile.mkdtemp(prefix="release-bench-", dir=harness.session_dir))
        deadline = 10.0
        name, app, _, _ = save_release_environment(root, postgres, s3, health_deadline=deadline)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLIPWAY_", "AWS_", "PG"))}
        env["DOCKER_HOST"] = docker_info.host
        # Compose v2 (the plugin in the session's DOCKER_CONFIG) for both sides.
        env["DOCKER_CONFIG"] = os.environ["DOCKER_CONFIG"] = str(docker_info.docker_config)
        try:
            slipway("release", "v1", "--env", name, env=env)  # warm-up: v1 everywhere

            base, slip, backups = [], [], []
            for _ in range(repeat):
                base += [compose_up(app, "v2", env), compose_up(app, "v1", env)]
                for version in ("v2", "v1"):
                    seconds, record = slipway("release", version, "--env", name, env=env)
                    slip.append(seconds)
                    backups.append(backup_seconds(record))
            release = min(s - b for s, b in zip(slip, backups, strict=True))
            baseline = min(base)
            overhead = release - baseline
            emit(
                {
                    "bench": "release orchestration overhead (backup excluded)",
                    "seconds": round(release, 3),
                    "baseline": "docker compose up -d + wait until the version answers",
                    "baseline_seconds": round(baseline, 3),
                    "overhead_seconds": round(overhead, 3),
                    "limit_overhead_seconds": OVERHEAD_LIMIT,
                    "ok": overhead <= OVERHEAD_LIMIT,
                    "backup_seconds": round(min(backups), 3),
                    "release_seconds_with_backup": round(min(slip), 3),
                }
            )

            # Recovery: v3's api fails its health gate; v1 must answer again.
            seen: list[tuple[datetime, str | None]] = []
            stop = threading.Event()

            def poll() -> None:
                while not stop.is_set():
                    seen.append((datetime.now(UTC), answering(app)))
                    time.sleep(POLL)

            poller = threading.Thread(target=poll, daemon=True)
            poller.start()
            m = run_measured(
                [sys.executable, "-m", "deployments.cli", "release", "v3", "--env", name],
                env=env,
                cwd=REPO,
            )
            stop.set()
            poller.join()
            if m.returncode != 1 or "rolled back to v1" not in m.stderr:
                raise SystemExit(f"v3 should fail and roll back: {m.stderr[-2000:]}")
            from blocks.object_storage import ObjectStorage
            from tasks.release.journal import list_releases

            store = ObjectStorage.resolve(f"{name}-store")
            failed_release = list_releases(store.client(), store, name)[0].record
            failed = next(s for s in failed_release.steps if s.status == "failed")
            assert failed.finished_at is not None
            back = next(t for t, v in seen if t > failed.finished_at and v == "v1")
            emit(
                {
                    "bench": "failed release: health deadline to old version answering",
                    "seconds": round((back - failed.finished_at).total_seconds(), 3),
                    "failed_step": failed.name,
                    "health_deadline_seconds": deadline,
                    "release_seconds": round(m.seconds, 3),
                    "database_restored": failed_release.rollback.database_restored
                    if failed_release.rollback
                    else None,
                }
            )
        finally:
            app.remove(docker_info.client())
    finally:
        harness.stop()


if __name__ == "__main__":
    main()
