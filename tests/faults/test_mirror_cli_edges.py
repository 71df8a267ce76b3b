"""A bucket mirror off the happy path through `slipway mirror`: one line on stderr, exit 1, the rest done."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.faults.any_key_proxy import any_key_proxy, stored_key
from tests.faults.test_mirror_edges import GOOD, HOSTILE, localhost
from tests.harness.prefect_server import PrefectInfo
from tests.harness.s3 import S3Info
from tests.test_backup_restore import slipway
from tests.test_files_backup import dir_contents, new_bucket, put, s3_contents

pytestmark = [pytest.mark.s3, pytest.mark.prefect]


@pytest.fixture
def env(s3: S3Info, prefect_server: PrefectInfo) -> dict[str, str]:
    """Both sides on the `s3` server: the source spelled `localhost`, the destination not."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SLIPWAY_"))}
    source = s3.env("SLIPWAY_SOURCE_")
    source["SLIPWAY_SOURCE_ENDPOINT_URL"] = localhost(s3)
    return {**base, **source, **s3.env(), "PREFECT_API_URL": prefect_server.api_url}


def one_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return errors[0]


def test_mirror_into_itself_under_another_spelling_is_one_line(
    s3: S3Info, env: dict[str, str]
) -> None:
    app = new_bucket(s3, "app")
    put(s3.client(), app, "a.txt", b"a")
    for _ in range(2):  # each run used to nest mirror/mirror/... one level deeper
        proc = slipway("mirror", f"s3://{app}", f"s3://{app}/mirror", "--delete", env=env)
        assert "overlap" in one_error(proc)
    assert s3_contents(s3, app) == {"a.txt": b"a"}


def test_hostile_keys_into_a_directory_are_one_line(
    s3: S3Info, env: dict[str, str], tmp_path: Path
) -> None:
    bucket = new_bucket(s3, "hostile")
    for key, body in {**HOSTILE, **GOOD}.items():
        put(s3.client(), bucket, stored_key(key), body)
    dest = tmp_path / "mirror"
    with any_key_proxy(s3) as url:
        env["SLIPWAY_SOURCE_ENDPOINT_URL"] = url
        proc = slipway("mirror", f"s3://{bucket}", str(dest), env=env)
    error = one_error(proc)
    assert f"{len(HOSTILE)} source entries were skipped" in error
    assert "cannot be a file" in error
    assert dir_contents(dest) == GOOD
    assert [p.name for p in tmp_path.iterdir()] == ["mirror"]


def source_with_a_dangling_link(tmp_path: Path) -> Path:
    """A directory holding `a.txt` and `gone.txt`, a link to a file that is not there."""
    src = tmp_path / "uploads"
    src.mkdir()
    (src / "a.txt").write_bytes(b"alpha")
    (src / "gone.txt").symlink_to(src / "moved-away.txt")
    return src


def test_a_dangling_link_in_a_local_source_is_one_line(
    s3: S3Info, env: dict[str, str], tmp_path: Path
) -> None:
    src = source_with_a_dangling_link(tmp_path)
    (src / "b.txt").write_bytes(b"beta")
    bucket = new_bucket(s3, "mirror")
    proc = slipway("mirror", str(src), f"s3://{bucket}/m", env=env)
    error = one_error(proc)
    assert "'gone.txt': a dangling link" in error
    assert s3_contents(s3, bucket, "m/") == {"a.txt": b"alpha", "b.txt": b"beta"}


def test_snapshot_into_its_own_bucket_under_another_spelling_is_refused(
    s3: S3Info, env: dict[str, str]
) -> None:
    app = new_bucket(s3, "app")
    put(s3.client(), app, "a.txt", b"a")
    env["SLIPWAY_BACKUP_URL"] = f"s3://{app}/backups"
    error = one_error(slipway("snapshot", f"s3://{app}", env=env))
    assert "lies inside" in error
    assert s3_contents(s3, app) == {"a.txt": b"a"}


def test_a_snapshot_of_a_directory_with_a_dangling_link_keeps_the_rest(
    s3: S3Info, env: dict[str, str], tmp_path: Path
) -> None:
    src = source_with_a_dangling_link(tmp_path)
    store = new_bucket(s3, "store")
    env["SLIPWAY_BACKUP_URL"] = f"s3://{store}/backups"
    error = one_error(slipway("snapshot", str(src), "--name", "uploads", env=env))
    assert "without 1 source entries" in error
    assert "'gone.txt': a dangling link" in error
    # The snapshot holds the rest, and restores it.
    back = tmp_path / "back"
    proc = slipway("restore-files", "uploads@latest", str(back), env=env)
    assert proc.returncode == 0, proc.stderr
    assert dir_contents(back) == {"a.txt": b"alpha"}
