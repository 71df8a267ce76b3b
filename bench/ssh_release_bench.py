"""A healthy release to three SSH hosts: `slipway release` against the runbook done by hand.

The hosts are the tests' three sshd in network namespaces, each running the stand-in
systemd app (tests/ssh_app.py: api, worker, web). Moving a host to a version takes the
Qubeless upgrade guide's steps (seed 000): stop web, worker, api; build; switch `current`
to the release; start api, worker, web, each once its /health answers the version.

The build (`pnpm install --frozen-lockfile && pnpm build` in the guide) is `sleep B`, B =
15 s by default (`BENCH_BUILD_SECONDS`): a small app's install with a warm store and its
three builds. A sleep, not a CPU burner: each real host builds on its own CPUs, which three
sleeps model on this 2-core machine and three burners sharing 2 cores would not.

- The baseline, bench/ssh_runbook.sh: a `pg_dump | gzip` backup to a file, then host after
  host one `ssh` running those steps, curl polling each /health a second apart.
- Slipway: `slipway release VERSION --env NAME`, every host at once (the default), with
  its backup to S3, preflight, journal, lock and health gates (polled a second apart too).

Goal: runbook / slipway >= 2. Reported too: Slipway's fixed cost (the release minus its
rollout step, from the journal), the rollout alone, and the build time from which the
goal is met on these figures. The sides take turns in one run (v1 <-> v2), best of each.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from bench.measure import Measurement, emit, run_measured
from tests.harness import Harness, ServiceUnavailable
from tests.harness.postgres import PostgresInfo
from tests.harness.prefect_server import PrefectInfo
from tests.harness.s3 import S3Info
from tests.harness.ssh_hosts import SshHostsInfo
from tests.pg_fixtures import create_database
from tests.ssh_app import SshApp, create_ssh_app

REPO = Path(__file__).resolve().parent.parent
RUNBOOK = Path(__file__).with_name("ssh_runbook.sh")
BUILD_SECONDS = 15.0
GOAL = 2.0  # runbook seconds / slipway seconds, at least


def runbook_phases(stdout: str) -> dict[str, float]:
    """Seconds per phase from ssh_runbook.sh's "backup <start> <end>" and
    "host <address> <start> <end>" lines: {"backup": s, "<address>": s, ...}."""
    phases: dict[str, float] = {}
    for line in stdout.splitlines():
        match line.split():
            case ["backup", start, end]:
                phases["backup"] = float(end) - float(start)
            case ["host", address, start, end]:
                phases[address] = float(end) - float(start)
            case _:
                pass
    return phases


def break_even_build(runbook: float, slipway: float, build: float, hosts: int) -> float | None:
    """The build time from which runbook / slipway >= GOAL, all else as measured.

    The runbook builds once per host one after the other, Slipway once for all at once:
    runbook(B) = r + hosts * B, slipway(B) = s + B. None when no build time reaches it.
    """
    if hosts <= GOAL:
        return None
    rest_runbook, rest_slipway = runbook - hosts * build, slipway - build
    return max(0.0, (GOAL * rest_slipway - rest_runbook) / (hosts - GOAL))


def step_seconds(record: dict[str, Any]) -> dict[str, float]:
    """Each journal step's seconds, by name."""
    return {s["name"]: float(s["seconds"] or 0) for s in record["steps"]}


def environment_yaml(
    name: str, app: SshApp, pg: PostgresInfo, database: str, s3: S3Info, bucket: str, build: float
) -> dict[str, Any]:
    """The environment as a user writes it; secrets as ${VARIABLES} (see `secrets_env`)."""
    target = app.settings(
        deploy_steps=[f"sleep {build:g}", "ln -sfn releases/{version} current"],
        command_timeout_seconds=build + 60,
    )
    del target["identity_file"]  # the key goes to the <name>-ssh block
    return {
        "name": name,
        "database": {"url": pg.url_without_password(database), "password": "${BENCH_DB_PASSWORD}"},
        "store": {
            "url": f"s3://{bucket}/backups",
            "endpoint_url": s3.endpoint_url,
            "access_key_id": s3.access_key,
            "secret_access_key": "${BENCH_S3_SECRET}",
        },
        "target": target,
        "health_checks": [
            {"kind": "http", "url": "http://{host}:8080/health", "version_field": "version"}
        ],
        "migrations": {"mode": "none"},
        "policy": {"min_free_disk_mb": 1},
        "ssh": {"private_key": "${BENCH_DEPLOY_KEY}"},
    }


class Sides:
    """Both ways of releasing to the same hosts, each timed."""

    def __init__(
        self,
        root: Path,
        info: SshHostsInfo,
        pg: PostgresInfo,
        s3: S3Info,
        prefect: PrefectInfo,
        build: float,
    ) -> None:
        self.app = create_ssh_app(info, versions=("v1", "v2"))
        self.build = build
        self.name = f"sshbench-{secrets.token_hex(3)}"
        database = create_database(pg)  # the tests' small schema of a real app
        bucket = f"sshbench-{secrets.token_hex(4)}"
        s3.client().create_bucket(Bucket=bucket)
        spec = root / "env.yaml"
        spec.write_text(
            yaml.safe_dump(environment_yaml(self.name, self.app, pg, database, s3, bucket, build))
        )
        base = {k: v for k, v in os.environ.items() if not k.startswith(("SLIPWAY_", "AWS_", "PG"))}
        self.cli_env = base | {"PREFECT_API_URL": prefect.api_url}
        known_hosts = root / "known_hosts"
        known_hosts.write_text(info.known_hosts)
        self.runbook_env = base | {
            "HOSTS": " ".join(h.address for h in info.hosts),
            "SSH_USER": info.user,
            "SSH_KEY": str(info.client_key),
            "KNOWN_HOSTS": str(known_hosts),
            "BUILD_SECONDS": f"{build:g}",
            "BACKUP_DIR": str(root / "backups"),
            "PATH": f"{pg.bin_dir}:{base['PATH']}",
            "PGHOST": pg.host,
            "PGPORT": str(pg.port),
            "PGUSER": pg.user,
            "PGPASSWORD": pg.password,
            "PGDATABASE": database,
        }
        applied = subprocess.run(
            [sys.executable, "-m", "deployments.cli", "env", "apply", str(spec)],
            cwd=REPO,
            env=self.cli_env
            | {
                "BENCH_DB_PASSWORD": pg.password,
                "BENCH_S3_SECRET": s3.secret_key,
                "BENCH_DEPLOY_KEY": info.client_key.read_text(),
            },
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if applied.returncode != 0:
            raise SystemExit(f"slipway env apply failed: {applied.stderr[-2000:]}")

    def check_all_on(self, version: str, after: str) -> None:
        wrong = {
            f"{h.name} {u}": got
            for h in self.app.hosts
            for u in ("api", "worker", "web")
            if (got := self.app.answering(h, u)) != version
        }
        if wrong:
            raise SystemExit(f"after {after}, not every unit answers {version}: {wrong}")

    def runbook(self, version: str) -> tuple[Measurement, dict[str, float]]:
        m = run_measured(["bash", str(RUNBOOK), version], env=self.runbook_env, cwd=REPO)
        if m.returncode != 0:
            raise SystemExit(f"the runbook to {version} failed: {m.stderr[-2000:]}")
        self.check_all_on(version, f"the runbook to {version}")
        return m, runbook_phases(m.stdout)

    def slipway(self, version: str) -> tuple[Measurement, dict[str, Any]]:
        argv = ["release", version, "--env", self.name, "--json"]
        m = run_measured(
            [sys.executable, "-m", "deployments.cli", *argv],
            env=self.cli_env,
            cwd=REPO,
        )
        if m.returncode != 0:
            raise SystemExit(f"slipway release {version} failed: {m.stderr[-2000:]}")
        self.check_all_on(version, f"slipway release {version}")
        return m, json.loads(m.stdout)


def report(
    build: float,
    hosts: int,
    runbooks: list[tuple[Measurement, dict[str, float]]],
    releases: list[tuple[Measurement, dict[str, Any]]],
) -> None:
    """The JSON lines: the comparison, Slipway's parts, the runbook's parts."""
    base, phases = min(runbooks, key=lambda r: r[0].seconds)
    slip, record = min(releases, key=lambda r: r[0].seconds)
    steps = step_seconds(record)
    speedup = round(base.seconds / slip.seconds, 3)
    emit(
        {
            "bench": "healthy release to 3 ssh hosts, all at once",
            "seconds": round(slip.seconds, 3),
            "baseline": "the runbook over ssh, host after host (bench/ssh_runbook.sh)",
            "baseline_seconds": round(base.seconds, 3),
            "speedup": speedup,
            "goal_speedup": GOAL,
            "ok": speedup >= GOAL,
            "build_seconds": build,
            "runs": [round(m.seconds, 3) for m, _ in releases],
            "baseline_runs": [round(m.seconds, 3) for m, _ in runbooks],
            "break_even_build_seconds": _rounded(
                break_even_build(base.seconds, slip.seconds, build, hosts)
            ),
        }
    )
    rollout = steps.get("rollout", 0.0)
    emit(
        {
            "bench": "slipway release to 3 ssh hosts: fixed cost and rollout",
            "seconds": round(slip.seconds, 3),
            "fixed_seconds": round(slip.seconds - rollout, 3),
            "rollout_seconds": round(rollout, 3),
            "rollout_beyond_build_seconds": round(rollout - build, 3),
            "steps": {k: round(v, 3) for k, v in steps.items()},
            "peak_rss_mb": slip.peak_rss_mb,
        }
    )
    per_host = [v for k, v in phases.items() if k != "backup"]
    emit(
        {
            "bench": "the runbook over ssh: its parts",
            "seconds": round(base.seconds, 3),
            "backup_seconds": round(phases.get("backup", 0.0), 3),
            "host_seconds": [round(v, 3) for v in per_host],
            "host_beyond_build_seconds": round(sum(per_host) / len(per_host) - build, 3),
        }
    )


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def main() -> None:
    rounds = int(os.environ.get("BENCH_REPEAT", "2"))
    build = float(os.environ.get("BENCH_BUILD_SECONDS", BUILD_SECONDS))
    harness = Harness()
    sides: Sides | None = None
    try:
        harness.start_async("ssh_hosts", "postgres", "s3", "prefect")
        info: SshHostsInfo = harness.require("ssh_hosts")
        pg: PostgresInfo = harness.require("postgres")
        s3: S3Info = harness.require("s3")
        prefect: PrefectInfo = harness.require("prefect")
        os.environ["PREFECT_API_URL"] = prefect.api_url
        os.environ["PREFECT_HOME"] = str(prefect.home)
        root = Path(tempfile.mkdtemp(prefix="ssh-release-bench-", dir=harness.session_dir))
        sides = Sides(root, info, pg, s3, prefect, build)
        sides.slipway("v1")  # warm-up: every host on v1, the first backup verified
        runbooks, releases = [], []
        for _ in range(rounds):  # each side both ways per round, taking turns: R S S R
            runbooks.append(sides.runbook("v2"))
            releases.append(sides.slipway("v1"))
            releases.append(sides.slipway("v2"))
            runbooks.append(sides.runbook("v1"))
        report(build, len(info.hosts), runbooks, releases)
    except ServiceUnavailable as exc:
        raise SystemExit(f"error: {exc}") from None
    finally:
        if sides is not None:
            sides.app.remove()
        harness.stop()


if __name__ == "__main__":
    main()
