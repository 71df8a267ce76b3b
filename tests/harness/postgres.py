"""A throwaway PostgreSQL server: initdb into the session directory, a free port, trust auth.

Stopped by a fast shutdown (SIGINT), which ends the sessions and removes the server's
shared memory (/dev/shm, System V); a killed server would leave both behind.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.harness.procs import ManagedProcess, ServiceUnavailable, free_port, is_root, wait_until

SUPERUSER = "postgres"
INSTALL_HINT = (
    "install PostgreSQL 15 server binaries (apt-get install postgresql-15) or set SLIPWAY_PG_BIN"
)


def find_pg_bin() -> Path:
    """Where initdb/postgres/pg_dump live: $SLIPWAY_PG_BIN, else the newest Debian one."""
    explicit = os.environ.get("SLIPWAY_PG_BIN")
    candidates = (
        [explicit]
        if explicit
        else sorted(
            glob.glob("/usr/lib/postgresql/*/bin"),
            key=lambda p: int(Path(p).parent.name),
            reverse=True,
        )
    )
    for cand in candidates:
        if cand and (Path(cand) / "postgres").exists() and (Path(cand) / "initdb").exists():
            return Path(cand)
    raise ServiceUnavailable(f"PostgreSQL server binaries not found: {INSTALL_HINT}")


@dataclass(frozen=True)
class PostgresInfo:
    host: str
    port: int
    user: str
    password: str
    bin_dir: Path

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{database}"

    def url_without_password(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"


class PostgresServer:
    """initdb + postgres, run as the `postgres` system user when the harness is root."""

    def __init__(self, session_dir: Path) -> None:
        self.root = session_dir / "postgres"
        self.proc: ManagedProcess | None = None
        self.session_dir = session_dir

    @staticmethod
    def _owner() -> str | None:
        """The user the server runs as: `postgres` when the harness is root, else ourselves."""
        return SUPERUSER if is_root() else None

    def start(self) -> PostgresInfo:
        bin_dir = find_pg_bin()
        data, sock = self.root / "data", self.root / "sock"
        for d in (data, sock):
            d.mkdir(parents=True)
        if is_root():
            try:
                shutil.chown(self.root, SUPERUSER)
                for d in (data, sock):
                    shutil.chown(d, SUPERUSER)
            except LookupError as exc:
                raise ServiceUnavailable(f"no `postgres` system user: {INSTALL_HINT}") from exc
        # TCP clients authenticate with a password (scram), as in production.
        password = secrets.token_urlsafe(18)
        pwfile = self.root / "pwfile"
        pwfile.write_text(password + "\n")
        if is_root():
            shutil.chown(pwfile, SUPERUSER)
        owner = self._owner()
        init = subprocess.run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                f"--pwfile={pwfile}",
                "-U",
                SUPERUSER,
                "-E",
                "UTF8",
                "--no-sync",
            ],
            capture_output=True,
            text=True,
            check=False,
            cwd=self.root,
            user=owner,
            group=owner,
            extra_groups=[] if owner else None,
        )
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed: {init.stderr.strip() or init.stdout.strip()}")
        port = free_port()
        self.proc = ManagedProcess(
            "postgres",
            [
                str(bin_dir / "postgres"),
                "-D",
                str(data),
                "-p",
                str(port),
                "-k",
                str(sock),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=100",
            ],
            session_dir=self.session_dir,
            cwd=self.root,
            term_timeout=15,
            stop_signal=signal.SIGINT,
            user=owner,
        )
        pwfile.unlink()
        info = PostgresInfo("127.0.0.1", port, SUPERUSER, password, bin_dir)

        def ready() -> bool:
            res = subprocess.run(
                [str(bin_dir / "pg_isready"), "-h", info.host, "-p", str(port)],
                capture_output=True,
                check=False,
            )
            return res.returncode == 0

        wait_until(ready, timeout=30, what="PostgreSQL", proc=self.proc)
        return info

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
