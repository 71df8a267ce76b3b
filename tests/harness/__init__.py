"""The test harness: real services, started once per test session and always stopped.

`Harness.require(name)` starts a service (in a background thread, so several start at
once) and returns its connection info; `Harness.stop()` stops everything in reverse order.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from tests.harness.docker_engine import DockerEngine
from tests.harness.postgres import PostgresServer
from tests.harness.prefect_server import PrefectServer
from tests.harness.procs import (
    ServiceUnavailable,
    harness_base,
    new_session_dir,
    remove_base_if_empty,
    remove_tree,
)
from tests.harness.s3 import SeaweedS3
from tests.harness.ssh_hosts import SshHosts
from tests.harness.sshd import SshServer

# s3b: a second S3 server, another endpoint with other credentials (cross-endpoint copies).
SERVICES = ("postgres", "s3", "s3b", "docker", "ssh", "ssh_hosts", "prefect")

__all__ = ["SERVICES", "Harness", "ServiceUnavailable", "harness_base"]


class Service(Protocol):
    def start(self) -> Any: ...
    def stop(self) -> None: ...


class Harness:
    def __init__(self, base_dir: Path | None = None, *, keep: bool = False) -> None:
        self.base_dir = base_dir or harness_base()
        self.session_dir = new_session_dir(self.base_dir)
        self.prefect_home = self.session_dir / "prefect-home"
        self.keep = keep
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=len(SERVICES), thread_name_prefix="harness")
        self._started: dict[str, tuple[Service, Future[Any]]] = {}

    def _make(self, name: str) -> Service:
        makers: dict[str, Callable[[], Service]] = {
            "postgres": lambda: PostgresServer(self.session_dir),
            "s3": lambda: SeaweedS3(self.session_dir),
            "s3b": lambda: SeaweedS3(self.session_dir, name="s3b"),
            "docker": lambda: DockerEngine(self.session_dir),
            "ssh": lambda: SshServer(self.session_dir),
            "ssh_hosts": lambda: SshHosts(self.session_dir),
            "prefect": lambda: PrefectServer(self.session_dir, self.prefect_home),
        }
        return makers[name]()

    def start_async(self, *names: str) -> None:
        with self._lock:
            for name in names:
                if name not in self._started:
                    service = self._make(name)
                    self._started[name] = (service, self._pool.submit(service.start))

    def require(self, name: str) -> Any:
        """Connection info of a started service; raises ServiceUnavailable or the start error."""
        self.start_async(name)
        return self._started[name][1].result()

    def stop(self) -> None:
        with self._lock:
            started = list(self._started.items())
            self._started.clear()
        for _, (service, future) in reversed(started):
            future.cancel()
            # Kill what runs now, so a start still in flight fails fast, then again for
            # anything that start launched meanwhile.
            service.stop()
            future.exception()
            service.stop()
        self._pool.shutdown(wait=True, cancel_futures=True)
        if not self.keep:
            remove_tree(self.session_dir)
            remove_base_if_empty(self.base_dir)
