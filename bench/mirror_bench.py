"""`python -m bench.mirror_bench`: Slipway's bucket mirror against `aws s3 sync` and rclone.

Starts two throwaway S3 servers and a Prefect server and fills a source bucket with
BENCH_OBJECTS (3,000) objects of 4-64 KiB plus five of 50 MiB. Measures, the tools taking
turns, best of BENCH_REPEAT (2):
- each tool's run on an empty bucket: its fixed cost, taken off its other figures;
- a first full mirror into a fresh prefix on the same endpoint (server-side copies; rclone
  as `rclone copy` at its best), and cross endpoint for Slipway alone (the others cannot);
- a run with nothing to do over BENCH_NOCHANGE_OBJECTS (20,000) objects: listed and compared.
One JSON line per measurement; `seconds_wall` is wall time, start-up included;
`mirror_seconds` is the mirror's own report of its time.
"""

from __future__ import annotations

import io
import json
import os
import random
import secrets
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from bench.measure import Measurement, best, best_interleaved, emit, ratio_record, run_measured
from bench.rclone import REMOTE, rclone_env, rclone_path
from tests.harness import Harness
from tests.harness.prefect_server import PrefectInfo
from tests.harness.s3 import S3Info

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

REPO = Path(__file__).resolve().parent.parent
UV = REPO / ".tools" / "bin" / "uv"
AWSCLI = "awscli==1.42.76"  # awscli pins botocore, so it gets a venv of its own
FILL_WORKERS = 32
BIG_OBJECTS = 5
BIG_SIZE = 50 * 1024 * 1024
NOCHANGE_SIZE = 1024
FIXED_COST_LIMIT = 4.0
RCLONE_FLAGS = ["--transfers", "32", "--checkers", "32", "--checksum", "--fast-list"]


@dataclass(frozen=True)
class Tree:
    """What a bucket prefix holds."""

    objects: int
    size: int

    @property
    def mb(self) -> float:
        return self.size / 1048576


def fresh(name: str) -> str:
    return f"{name}-{secrets.token_hex(3)}"


def fast_client(server: S3Info) -> S3Client:
    """A client for filling and checking buckets, with a connection per fill worker."""
    return boto3.client(
        "s3",
        endpoint_url=server.endpoint_url,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        region_name=server.region,
        config=Config(
            s3={"addressing_style": "path"},
            retries={"mode": "standard", "max_attempts": 5},
            max_pool_connections=FILL_WORKERS,
        ),
    )


def fill(client: S3Client, bucket: str, prefix: str, sizes: list[int]) -> None:
    """Put one object of random bytes per size, as `prefix`/data/<n>/<hex>.bin."""

    def put(i: int) -> None:
        key = f"{prefix}/data/{i // 100}/{secrets.token_hex(8)}.bin"
        client.put_object(Bucket=bucket, Key=key, Body=os.urandom(sizes[i]))

    with ThreadPoolExecutor(FILL_WORKERS) as pool:
        list(pool.map(put, range(len(sizes))))


def tree(client: S3Client, bucket: str, prefix: str) -> Tree:
    objects = size = 0
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/")
    for page in pages:
        for obj in page.get("Contents", []):
            objects += 1
            size += obj["Size"]
    return Tree(objects, size)


def rates(t: Tree, seconds: float, prefix: str = "") -> dict[str, float]:
    return {
        f"{prefix}objects_per_s": round(t.objects / seconds, 1),
        f"{prefix}mb_per_s": round(t.mb / seconds, 1),
    }


def install_awscli(into: Path) -> Path:
    """awscli in a venv of its own, bytecode compiled as pip would (not timed)."""
    python = into / "bin" / "python"
    subprocess.run([UV, "venv", "--quiet", "--python", sys.executable, into], check=True)
    subprocess.run(
        [UV, "pip", "install", "--quiet", "--compile-bytecode", "--python", python, AWSCLI],
        check=True,
    )
    return into / "bin" / "aws"


@dataclass
class Tools:
    """The two commands under test, both reading from `source`."""

    source: S3Info
    aws: Path
    env: dict[str, str]  # the environment without AWS_, SLIPWAY_SOURCE_ or Prefect API
    prefect_api_url: str

    def slipway(self, src: str, dst: str, dst_server: S3Info) -> Measurement:
        env = {
            **self.env,
            **self.source.env("SLIPWAY_SOURCE_"),
            **dst_server.env(),
            "PREFECT_API_URL": self.prefect_api_url,
        }
        argv = [sys.executable, "-m", "deployments.cli", "mirror", src, dst, "--json"]
        return run_measured(argv, env=env, cwd=REPO)

    def awscli(self, src: str, dst: str, *extra: str) -> Measurement:
        argv = [str(self.aws), "s3", "sync", src, dst, "--endpoint-url", self.source.endpoint_url]
        return run_measured([*argv, *(extra or ["--only-show-errors"])], env=self.aws_env())

    def rclone(self, src: str, dst: str) -> Measurement:
        """rclone at its best: same-remote server-side copies, wide, one listing per side."""
        argv = [rclone_path(), "copy", _remote(src), _remote(dst), *RCLONE_FLAGS]
        return run_measured(argv, env=rclone_env(self.env, self.source))

    def aws_env(self) -> dict[str, str]:
        nowhere = str(self.aws.parent / "no-aws-config")
        return {
            **self.env,
            **self.source.env(),
            "AWS_CONFIG_FILE": nowhere,
            "AWS_SHARED_CREDENTIALS_FILE": nowhere,
            "AWS_EC2_METADATA_DISABLED": "true",
        }


def _remote(url: str) -> str:
    """s3://bucket/prefix as rclone's bench:bucket/prefix."""
    return f"{REMOTE}:{url.removeprefix('s3://')}"


def net(run: Measurement, empty: Measurement) -> float:
    """A run's time net of the same tool's run on an empty bucket (clamped above timer noise,
    so rates stay finite)."""
    return max(run.seconds - empty.seconds, 0.001)


def report(m: Measurement) -> dict[str, Any]:
    """Slipway's --json output."""
    try:
        out: dict[str, Any] = json.loads(m.stdout)
    except ValueError as exc:
        raise SystemExit(f"slipway mirror printed no JSON: {m.stdout[-2000:]!r}") from exc
    return out


def first_full(
    run: Callable[[str], Measurement], client: S3Client, bucket: str, name: str, expect: Tree
) -> Callable[[], Measurement]:
    """One mirror into a fresh prefix, checked to have copied everything."""

    def once() -> Measurement:
        prefix = fresh(name)
        m = run(f"s3://{bucket}/{prefix}")
        if m.returncode == 0 and (got := tree(client, bucket, prefix)) != expect:
            raise SystemExit(f"{name}: the destination holds {got}, expected {expect}")
        return m

    return once


def main() -> None:
    small = int(os.environ.get("BENCH_OBJECTS", "3000"))
    nochange = int(os.environ.get("BENCH_NOCHANGE_OBJECTS", "20000"))
    repeat = int(os.environ.get("BENCH_REPEAT", "2"))
    harness = Harness()
    try:
        harness.start_async("s3", "s3b", "prefect")
        aws = install_awscli(harness.session_dir / "awscli")
        s3: S3Info = harness.require("s3")
        s3b: S3Info = harness.require("s3b")
        client, client_b = fast_client(s3), fast_client(s3b)
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AWS_", "SLIPWAY_SOURCE_")) and k != "PREFECT_API_URL"
        }
        # As in production and in the backup bench: the runs go to a Prefect server.
        prefect: PrefectInfo = harness.require("prefect")
        env["PREFECT_HOME"] = str(prefect.home)
        tools = Tools(s3, aws, env, prefect.api_url)

        src, nc_src, empty, dst = (fresh(n) for n in ("src", "nochange", "empty", "dst"))
        dst_b = fresh("dst")
        for bucket in (src, nc_src, empty, dst):
            client.create_bucket(Bucket=bucket)
        client_b.create_bucket(Bucket=dst_b)
        rng = random.Random(0x5117)  # noqa: S311 - sizes only
        fill(client, src, "src", [rng.randint(4096, 65536) for _ in range(small)])
        for i in range(BIG_OBJECTS):
            client.upload_fileobj(io.BytesIO(os.urandom(BIG_SIZE)), src, f"src/big/{i}.bin")
        fill(client, nc_src, "src", [NOCHANGE_SIZE] * nochange)
        full, unchanged = tree(client, src, "src"), tree(client, nc_src, "src")
        emit(
            {
                "bench": "setup",
                "awscli": AWSCLI.split("==")[1],
                "objects": full.objects,
                "mb": round(full.mb, 1),
                "nochange_objects": unchanged.objects,
            }
        )
        source, nc_source, empty_source = (f"s3://{b}/src" for b in (src, nc_src, empty))

        # Warm-ups (not timed): the first runs read their modules from disk.
        best(1, lambda: tools.slipway(empty_source, f"s3://{dst}/warm-slipway", s3))
        best(1, lambda: tools.awscli(empty_source, f"s3://{dst}/warm-aws"))
        best(1, lambda: tools.rclone(empty_source, f"s3://{dst}/warm-rclone"))

        # Each tool's run on an empty bucket: its fixed cost, taken off its other figures.
        def empties() -> list[Callable[[], Measurement]]:
            return [
                lambda: tools.slipway(empty_source, f"s3://{dst}/{fresh('e-slipway')}", s3),
                lambda: tools.awscli(empty_source, f"s3://{dst}/{fresh('e-aws')}"),
                lambda: tools.rclone(empty_source, f"s3://{dst}/{fresh('e-rclone')}"),
            ]

        # 1. First full mirror, same endpoint: server-side copies on every side.
        slip, aws_full, rc_full, slip_e, aws_e, rc_e = best_interleaved(
            repeat,
            first_full(lambda d: tools.slipway(source, d, s3), client, dst, "slipway", full),
            first_full(lambda d: tools.awscli(source, d), client, dst, "aws", full),
            first_full(lambda d: tools.rclone(source, d), client, dst, "rclone", full),
            *empties(),
        )
        out = report(slip)
        emit(
            {
                "bench": "slipway mirror on an empty bucket (fixed cost)",
                "seconds": round(slip_e.seconds, 3),
                "limit_seconds": FIXED_COST_LIMIT,
                "ok": slip_e.seconds <= FIXED_COST_LIMIT,
                "aws_seconds": round(aws_e.seconds, 3),
                "rclone_seconds": round(rc_e.seconds, 3),
            }
        )
        slip_net = net(slip, slip_e)
        for name, base, base_e, limit in (
            ("aws s3 sync", aws_full, aws_e, round(1 / 1.5, 3)),
            ("rclone copy " + " ".join(RCLONE_FLAGS), rc_full, rc_e, 1.0),
        ):
            base_net = net(base, base_e)
            emit(
                ratio_record(
                    "slipway mirror, first full (same endpoint), net of the empty run",
                    slip_net,
                    f"{name} (net)",
                    base_net,
                    limit,
                    speedup=round(base_net / slip_net, 2),
                    objects=full.objects,
                    mb=round(full.mb, 1),
                    seconds_wall=round(slip.seconds, 3),
                    baseline_seconds_wall=round(base.seconds, 3),
                    **rates(full, slip_net),
                    **rates(full, base_net, "baseline_"),
                    peak_rss_mb=slip.peak_rss_mb,
                    baseline_peak_rss_mb=base.peak_rss_mb,
                    mirror_seconds=out.get("seconds"),
                    list_seconds=out.get("list_seconds"),
                )
            )

        # 2. First full mirror, cross endpoint: every byte through Slipway (the others cannot).
        cross = best(
            repeat,
            first_full(lambda d: tools.slipway(source, d, s3b), client_b, dst_b, "cross", full),
        )
        emit(
            {
                "bench": "slipway mirror, first full (cross endpoint)",
                "seconds": round(cross.seconds, 3),
                "objects": full.objects,
                "mb": round(full.mb, 1),
                **rates(full, cross.seconds),
                "peak_rss_mb": cross.peak_rss_mb,
                "mirror_seconds": report(cross).get("seconds"),
                "list_seconds": report(cross).get("list_seconds"),
            }
        )

        # 3. Nothing to do: each tool against its own earlier copy of the no-change bucket.
        slip_dst, aws_dst, rc_dst = (
            f"s3://{dst}/nochange-{n}" for n in ("slipway", "aws", "rclone")
        )
        best(1, lambda: tools.slipway(nc_source, slip_dst, s3))
        best(1, lambda: tools.awscli(nc_source, aws_dst))
        best(1, lambda: tools.rclone(nc_source, rc_dst))
        for prefix in ("nochange-slipway", "nochange-aws", "nochange-rclone"):
            if (got := tree(client, dst, prefix)) != unchanged:
                raise SystemExit(f"{prefix}: the destination holds {got}, expected {unchanged}")
        dry = best(1, lambda: tools.awscli(nc_source, aws_dst, "--dryrun"))
        if dry.stdout.strip():
            raise SystemExit(f"aws s3 sync would copy again: {dry.stdout[:2000]}")

        def slipway_nochange() -> Measurement:
            m = tools.slipway(nc_source, slip_dst, s3)
            if m.returncode == 0 and (todo := report(m).get("to_copy")) != 0:
                raise SystemExit(f"slipway mirror with nothing to do planned {todo} copies")
            return m

        slip_nc, aws_nc, rc_nc, slip_e, aws_e, rc_e = best_interleaved(
            repeat,
            slipway_nochange,
            lambda: tools.awscli(nc_source, aws_dst),
            lambda: tools.rclone(nc_source, rc_dst),
            *empties(),
        )
        slip_net = net(slip_nc, slip_e)
        for name, base, base_e, limit in (
            ("aws s3 sync", aws_nc, aws_e, 0.5),
            ("rclone copy " + " ".join(RCLONE_FLAGS), rc_nc, rc_e, 1.0),
        ):
            base_net = net(base, base_e)
            emit(
                ratio_record(
                    "slipway mirror, nothing to do: listed and compared, net of the empty run",
                    slip_net,
                    f"{name}, nothing to do (net)",
                    base_net,
                    limit,
                    objects=unchanged.objects,
                    compared_per_s=round(unchanged.objects / slip_net, 1),
                    baseline_compared_per_s=round(unchanged.objects / base_net, 1),
                    seconds_wall=round(slip_nc.seconds, 3),
                    baseline_seconds_wall=round(base.seconds, 3),
                    empty_seconds=round(slip_e.seconds, 3),
                    baseline_empty_seconds=round(base_e.seconds, 3),
                    mirror_seconds=report(slip_nc).get("seconds"),
                    list_seconds=report(slip_nc).get("list_seconds"),
                )
            )
    finally:
        harness.stop()


if __name__ == "__main__":
    main()
