"""`make bench`: Slipway's database backup and restore against the baselines, in one run.

Starts a throwaway PostgreSQL, S3 server and Prefect server, fills a synthetic database of
random text and jsonb (1 GiB by default, BENCH_MB to change) and a tiny one, then measures
each side (the baselines, Slipway plain and encrypted with age) BENCH_REPEAT times, the
sides taking turns (best run kept), and prints one JSON line per measurement. A command's fixed cost (start-up, flow-run bookkeeping, exit) is its
run on the tiny database; its data path is the big run minus the tiny one.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import tempfile
from pathlib import Path
from typing import Any

import psycopg
from pyrage import x25519

from bench.datagen import database_bytes, fill_database
from bench.measure import (
    Measurement,
    best,
    best_interleaved,
    emit,
    ratio_record,
    run_measured,
    run_shell_measured,
)
from bench.rclone import REMOTE, rclone_env, rclone_path
from tests.harness import Harness
from tests.harness.postgres import PostgresInfo
from tests.harness.prefect_server import PrefectInfo
from tests.harness.s3 import S3Info

REPO = Path(__file__).resolve().parent.parent
MEMORY_LIMIT_MB = 256
FIXED_COST_LIMIT = 4.0


def main() -> None:
    size_mb = int(os.environ.get("BENCH_MB", "1024"))
    repeat = int(os.environ.get("BENCH_REPEAT", "2"))
    harness = Harness()
    try:
        harness.start_async("postgres", "s3", "prefect")
        pg: PostgresInfo = harness.require("postgres")
        s3: S3Info = harness.require("s3")
        prefect: PrefectInfo = harness.require("prefect")
        with psycopg.connect(pg.url(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench")
            conn.execute("CREATE DATABASE tiny")
        with psycopg.connect(pg.url("tiny"), autocommit=True) as conn:
            conn.execute("CREATE TABLE note (id int PRIMARY KEY, body text)")
            conn.execute("INSERT INTO note SELECT i, md5(i::text) FROM generate_series(1, 100) i")
        fill = fill_database(pg.url("bench"), size_mb * 1024 * 1024)
        with psycopg.connect(pg.url("bench"), autocommit=True) as conn:
            # The fill's pages go to disk now, not in the background of the first runs.
            conn.execute("CHECKPOINT")
        emit({"bench": "setup", "database_bytes": database_bytes(pg.url("bench")), "rows": fill})
        bucket = f"bench-{secrets.token_hex(3)}"
        s3.client().create_bucket(Bucket=bucket)
        bin_dir = pg.bin_dir
        libpq = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("PG", "AWS_"))},
            "PGHOST": pg.host,
            "PGPORT": str(pg.port),
            "PGUSER": pg.user,
            "PGPASSWORD": pg.password,
            "PGDATABASE": "bench",
        }
        env = {
            **libpq,
            **s3.env(),
            "DATABASE_URL": pg.url_without_password("bench"),
            "SLIPWAY_BACKUP_URL": f"s3://{bucket}/bench",
            "PREFECT_API_URL": prefect.api_url,
            "PREFECT_HOME": str(prefect.home),
        }
        slipway = [sys.executable, "-m", "deployments.cli"]
        work = Path(tempfile.mkdtemp(prefix="slipway-bench-", dir=harness.session_dir))

        upload = (
            f'{sys.executable} -c \'import boto3,sys; boto3.client("s3").upload_file('
            f'sys.argv[1], "{bucket}", "runbook/backup.sql.gz")\' {work}/backup.sql.gz'
        )
        # The runbooks' way is slow and steady: once is enough.
        runbook = best(
            1,
            lambda: run_shell_measured(
                f"{bin_dir}/pg_dump -Fp -w | gzip > {work}/backup.sql.gz && {upload}", env=env
            ),
        )
        (work / "backup.sql.gz").unlink()

        manifests: list[dict[str, Any]] = []

        def slipway_backup(run_env: dict[str, str]) -> Measurement:
            m = run_measured([*slipway, "backup", "--json"], env=run_env, cwd=REPO)
            if m.returncode == 0:
                manifests.append(json.loads(m.stdout))
            return m

        def manifest_of(m: Measurement) -> dict[str, Any]:
            return next(x for x in manifests if x["id"] == json.loads(m.stdout)["id"])

        # The best shell pipeline doing the same work: dump, compress on every core, hash
        # and stream to the same bucket, with Debian's rclone as the uploader.
        rclone_pipeline = (
            f"{bin_dir}/pg_dump -Fc -Z0 -w | zstd -q -1 -T0 | "
            "tee >(sha256sum > /dev/null) | "
            f"{rclone_path()} rcat {REMOTE}:{bucket}/rclone/bench.pgc.zst"
        )
        tiny_env = {**env, "DATABASE_URL": pg.url_without_password("tiny")}
        # The same backup encrypted (age, one X25519 recipient), in the same turns.
        identity = x25519.Identity.generate()
        identity_file = work / "key.txt"
        identity_file.write_text(f"{identity}\n")
        encrypted_env = {
            **env,
            "SLIPWAY_BACKUP_RECIPIENTS": str(identity.to_public()),
            "SLIPWAY_BACKUP_IDENTITY_FILE": str(identity_file),
        }
        pg_dump_alone, pipeline, backup, encrypted, tiny = best_interleaved(
            repeat,
            lambda: run_shell_measured(f"{bin_dir}/pg_dump -Fc -Z0 -w > /dev/null", env=libpq),
            lambda: run_shell_measured(rclone_pipeline, env=rclone_env(libpq, s3)),
            lambda: slipway_backup(env),
            lambda: slipway_backup(encrypted_env),
            lambda: slipway_backup(tiny_env),
        )
        manifest = manifest_of(backup)
        # The fixed cost (start-up, flow-run bookkeeping, exit) does not grow with the data.
        data_path = backup.seconds - tiny.seconds
        emit(
            {
                "bench": "slipway backup of a tiny database (fixed cost, end to end)",
                "seconds": round(tiny.seconds, 3),
                "limit_seconds": FIXED_COST_LIMIT,
                "ok": tiny.seconds <= FIXED_COST_LIMIT,
                "tiny_raw_bytes": manifest_of(tiny)["raw_bytes"],
            }
        )
        details = {
            "end_to_end_seconds": round(backup.seconds, 3),
            "dump_to_upload_seconds": float(manifest["dump_seconds"]),
            "raw_mb": round(int(manifest["raw_bytes"]) / 1048576, 1),
            "stored_mb": round(int(manifest["dump"]["size"]) / 1048576, 1),
        }
        emit(
            ratio_record(
                f"slipway backup data path ({size_mb} MiB minus tiny)",
                data_path,
                "pg_dump | zstd -1 -T0 | tee >(sha256sum) | rclone rcat",
                pipeline.seconds,
                1.0,
                **details,
            )
        )
        emit(
            ratio_record(
                f"slipway backup data path ({size_mb} MiB minus tiny)",
                data_path,
                "pg_dump -Fc -Z0 > /dev/null",
                pg_dump_alone.seconds,
                1.10,
            )
        )
        emit(
            ratio_record(
                f"slipway encrypted backup data path ({size_mb} MiB minus tiny; age)",
                encrypted.seconds - tiny.seconds,
                "slipway backup data path, not encrypted",
                data_path,
                1.10,
                end_to_end_seconds=round(encrypted.seconds, 3),
                stored_mb=round(int(manifest_of(encrypted)["dump"]["size"]) / 1048576, 1),
                peak_rss_mb=round(encrypted.peak_rss_mb, 1),
                plain_peak_rss_mb=round(backup.peak_rss_mb, 1),
            )
        )
        emit(
            ratio_record(
                "slipway backup (end to end)",
                backup.seconds,
                "runbook: pg_dump | gzip > file, then upload",
                runbook.seconds,
                round(1 / 3, 3),
                speedup=round(runbook.seconds / backup.seconds, 2),
            )
        )
        emit(
            {
                "bench": "backup peak memory",
                "peak_rss_mb": round(backup.peak_rss_mb, 1),
                "encrypted_peak_rss_mb": round(encrypted.peak_rss_mb, 1),
                "limit_mb": MEMORY_LIMIT_MB,
                "ok": max(backup.peak_rss_mb, encrypted.peak_rss_mb) <= MEMORY_LIMIT_MB,
            }
        )

        # Restore: pg_restore -j 2 from a local -Fc -Z0 file, against slipway restore from S3.
        archive = work / "bench.pgc"
        run_shell_measured(f"{bin_dir}/pg_dump -Fc -Z0 -w -f {archive}", env=libpq)
        counter = iter(range(1000))

        def fresh_db() -> str:
            return f"restore_{next(counter)}_{secrets.token_hex(2)}"

        def baseline_restore() -> Measurement:
            name = fresh_db()
            return run_shell_measured(
                f"{bin_dir}/createdb -w -T template0 {name} && "
                f"{bin_dir}/pg_restore -w -j 2 --exit-on-error -d {name} {archive}",
                env=libpq,
            )

        def slipway_restore(
            backup_id: str, source: str, run_env: dict[str, str] = env
        ) -> Measurement:
            return run_measured(
                [
                    *slipway,
                    "restore",
                    backup_id,
                    "--target-database-url",
                    pg.url_without_password(fresh_db()),
                    "--source-database",
                    source,
                    "--json",
                ],
                env=run_env,
                cwd=REPO,
            )

        tiny_id = str(manifest_of(tiny)["id"])
        encrypted_id = str(manifest_of(encrypted)["id"])
        base_restore, restore, encrypted_restore, tiny_restore = best_interleaved(
            repeat,
            baseline_restore,
            lambda: slipway_restore(str(manifest["id"]), "bench"),
            lambda: slipway_restore(encrypted_id, "bench", encrypted_env),
            lambda: slipway_restore(tiny_id, "tiny"),
        )
        emit(
            {
                "bench": "slipway restore of a tiny database (fixed cost, end to end)",
                "seconds": round(tiny_restore.seconds, 3),
            }
        )
        emit(
            ratio_record(
                f"slipway restore data path ({size_mb} MiB minus tiny; from S3, checksum, beside, swap)",
                restore.seconds - tiny_restore.seconds,
                "pg_restore -j 2 from a local -Fc -Z0 file",
                base_restore.seconds,
                1.2,
                end_to_end_seconds=round(restore.seconds, 3),
                peak_rss_mb=round(restore.peak_rss_mb, 1),
            )
        )
        emit(
            ratio_record(
                f"slipway encrypted restore data path ({size_mb} MiB minus tiny; age -d)",
                encrypted_restore.seconds - tiny_restore.seconds,
                "slipway restore data path, not encrypted",
                restore.seconds - tiny_restore.seconds,
                1.10,
                end_to_end_seconds=round(encrypted_restore.seconds, 3),
            )
        )
        emit(
            {
                "bench": "restore peak memory",
                "peak_rss_mb": round(restore.peak_rss_mb, 1),
                "encrypted_peak_rss_mb": round(encrypted_restore.peak_rss_mb, 1),
                "limit_mb": MEMORY_LIMIT_MB,
                "ok": max(restore.peak_rss_mb, encrypted_restore.peak_rss_mb) <= MEMORY_LIMIT_MB,
            }
        )
    finally:
        harness.stop()


if __name__ == "__main__":
    main()
