"""One environment a module's end-to-end release tests share, driven through `slipway`."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from tests.commands import slipway, start_slipway
from tests.harness.postgres import PostgresInfo
from tests.pg_fixtures import snapshot


class Released(Protocol):
    """What a test environment tells of itself: its name and its database's."""

    @property
    def name(self) -> str: ...

    @property
    def database(self) -> str: ...


E = TypeVar("E", bound=Released)


@dataclass
class CliStage(Generic[E]):
    env: E
    pg: PostgresInfo
    cli_env: dict[str, str]

    @property
    def name(self) -> str:
        return self.env.name

    def db(self) -> dict[str, Any]:
        return snapshot(self.pg, self.env.database)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return slipway(*args, env=self.cli_env)

    def start(self, *args: str) -> subprocess.Popen[str]:
        return start_slipway(*args, env=self.cli_env)

    def failed_line(self, version: str) -> str:
        """`slipway release VERSION`, which must fail in one line: that line."""
        done = self.cli("release", version, "--env", self.name)
        assert done.returncode == 1, done.stdout + done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        return lines[0]
