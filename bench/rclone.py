"""Debian's rclone as a benchmark baseline, configured by environment only (no config file)."""

from __future__ import annotations

import shutil
from collections.abc import Mapping

from tests.harness.s3 import S3Info

REMOTE = "bench"


def rclone_path() -> str:
    """The rclone command, or a one-line exit naming the package to install."""
    found = shutil.which("rclone")
    if found is None:
        raise SystemExit("rclone is missing: `make bench` installs Debian's rclone (as root)")
    return found


def rclone_env(base: Mapping[str, str], server: S3Info) -> dict[str, str]:
    """`base` plus remote `bench:` pointing at `server` (rclone's own transport breaks on
    AWS_CA_BUNDLE, so that is left out)."""
    prefix = f"RCLONE_CONFIG_{REMOTE.upper()}_"
    return {
        **{k: v for k, v in base.items() if k != "AWS_CA_BUNDLE"},
        "RCLONE_CONFIG": "/dev/null",
        f"{prefix}TYPE": "s3",
        f"{prefix}PROVIDER": "SeaweedFS",
        f"{prefix}ENDPOINT": server.endpoint_url,
        f"{prefix}ACCESS_KEY_ID": server.access_key,
        f"{prefix}SECRET_ACCESS_KEY": server.secret_key,
        f"{prefix}REGION": server.region,
    }
