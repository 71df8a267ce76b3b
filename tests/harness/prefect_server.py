"""A Prefect server (SQLite under the session directory), a `process` work pool and a worker."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.harness.procs import ManagedProcess, free_port, wait_until

WORK_POOL = "slipway-test"


@dataclass(frozen=True)
class PrefectInfo:
    api_url: str
    work_pool: str
    home: Path


def prefect_env(home: Path, api_url: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        {
            "PREFECT_HOME": str(home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOGGING_LEVEL": "INFO",
        }
    )
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


class PrefectServer:
    def __init__(self, session_dir: Path, home: Path) -> None:
        self.session_dir = session_dir
        self.home = home
        self.server: ManagedProcess | None = None
        self.worker: ManagedProcess | None = None

    def start(self) -> PrefectInfo:
        prefect = [sys.executable, "-m", "prefect"]
        port = free_port()
        api_url = f"http://127.0.0.1:{port}/api"
        self.home.mkdir(parents=True, exist_ok=True)
        server_env = prefect_env(self.home) | {
            "PREFECT_SERVER_API_HOST": "127.0.0.1",
            "PREFECT_SERVER_API_PORT": str(port),
            "PREFECT_UI_API_URL": api_url,
        }
        self.server = ManagedProcess(
            "prefect-server",
            [*prefect, "server", "start"],
            session_dir=self.session_dir,
            env=server_env,
            term_timeout=10,
        )
        wait_until(
            lambda: httpx.get(f"{api_url}/health", timeout=2).status_code == 200,
            timeout=90,
            what="Prefect server",
            proc=self.server,
            interval=0.5,
        )
        env = prefect_env(self.home, api_url)
        subprocess.run(
            [*prefect, "work-pool", "create", WORK_POOL, "--type", "process", "--overwrite"],
            env=env,
            check=True,
            capture_output=True,
        )
        self.worker = ManagedProcess(
            "prefect-worker",
            [*prefect, "worker", "start", "--pool", WORK_POOL, "--type", "process", "--limit", "4"],
            session_dir=self.session_dir,
            env=env,
            term_timeout=10,
        )

        def worker_online() -> bool:
            res = httpx.post(f"{api_url}/work_pools/{WORK_POOL}/workers/filter", json={}, timeout=2)
            return res.status_code == 200 and any(w.get("status") == "ONLINE" for w in res.json())

        wait_until(worker_online, timeout=60, what="Prefect worker", proc=self.worker, interval=0.5)
        return PrefectInfo(api_url, WORK_POOL, self.home)

    def stop(self) -> None:
        for proc in (self.worker, self.server):
            if proc is not None:
                proc.stop()
