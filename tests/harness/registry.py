"""A Distribution registry (Debian's `docker-registry`) on loopback, for the test images.

Filesystem storage in the session directory, no auth: 127.0.0.0/8 is an insecure registry
by default, so the engine pushes and pulls over plain HTTP with no daemon setting.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

from tests.harness.procs import ManagedProcess, ServiceUnavailable, free_port, wait_until

REGISTRY_BIN = Path("/usr/bin/docker-registry")


def _answers(address: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{address}/v2/", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class Registry:
    def __init__(self, session_dir: Path) -> None:
        self.session_dir = session_dir
        self.proc: ManagedProcess | None = None

    def start(self) -> str:
        """Start it; returns its address, `127.0.0.1:PORT`."""
        if not REGISTRY_BIN.exists():
            raise ServiceUnavailable(
                "the test images come from a registry: apt-get install docker-registry"
            )
        root = self.session_dir / "registry"
        (root / "data").mkdir(parents=True)
        address = f"127.0.0.1:{free_port()}"
        config = root / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log: {level: warn}\n"
            f"storage: {{filesystem: {{rootdirectory: {root / 'data'}}}, delete: {{enabled: true}}}}\n"
            f"http: {{addr: '{address}'}}\n"
        )
        self.proc = ManagedProcess(
            "registry", [str(REGISTRY_BIN), "serve", str(config)], session_dir=self.session_dir
        )
        wait_until(lambda: _answers(address), timeout=30, what="registry", proc=self.proc)
        return address

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
