"""`make demo`: a throwaway PostgreSQL with sample data and a local S3 server; back up, list,
verify with a drill, restore into a new database, print a summary, stop everything."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.harness import Harness
from tests.harness.postgres import PostgresInfo
from tests.harness.prefect_server import PrefectInfo
from tests.harness.procs import session_tmp
from tests.harness.s3 import S3Info
from tests.pg_fixtures import create_database, snapshot

REPO = Path(__file__).resolve().parent.parent


def step(title: str, env: dict[str, str], *args: str) -> str:
    print(f"\n$ slipway {' '.join(args)}", flush=True)
    t0 = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "deployments.cli", *args],
        env=env,
        cwd=REPO,
        text=True,
        capture_output=True,
        check=False,
    )
    print(out.stdout.rstrip())
    if out.returncode != 0:
        print(out.stderr.rstrip(), file=sys.stderr)
        raise SystemExit(f"demo failed at: {title}")
    print(f"  ({title}: {time.monotonic() - t0:.1f} s)")
    return out.stdout


def main() -> None:
    harness = Harness()
    try:
        print("starting a throwaway PostgreSQL, an S3 server and a Prefect server...", flush=True)
        harness.start_async("postgres", "s3", "prefect")
        pg: PostgresInfo = harness.require("postgres")
        s3: S3Info = harness.require("s3")
        prefect: PrefectInfo = harness.require("prefect")
        database = create_database(pg, name="demo_app")
        s3.client().create_bucket(Bucket="demo-backups")
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("PG", "AWS_"))},
            **s3.env(),
            "DATABASE_URL": pg.url_without_password(database),
            "PGPASSWORD": pg.password,
            "SLIPWAY_BACKUP_URL": "s3://demo-backups/nightly",
            "PREFECT_API_URL": prefect.api_url,
            "PREFECT_HOME": str(prefect.home),
            # The commands' temporary files go where the services' do, removed at the end.
            "TMPDIR": str(session_tmp(harness.session_dir)),
        }
        backup_id = step("backup", env, "backup").split()[0]
        step("list", env, "backups", "list")
        step("verify with a restore drill", env, "verify", backup_id, "--drill")
        target = "demo_app_restored"
        step(
            "restore",
            env,
            "restore",
            backup_id,
            "--target-database-url",
            pg.url_without_password(target),
            "--source-database",
            database,
        )
        same = snapshot(pg, target) == snapshot(pg, database)
        rows = sum(len(r) for r in snapshot(pg, target)["rows"].values())
        print(
            f"\nsummary: backup {backup_id} restored into {target!r}: {rows} rows, "
            f"{'identical to the original' if same else 'DIFFERENT from the original'}"
        )
        print(f"(the runs were on the Prefect server at {prefect.api_url.removesuffix('/api')})")
        if not same:
            raise SystemExit(1)
    finally:
        harness.stop()
        print("stopped the demo services")


if __name__ == "__main__":
    main()
