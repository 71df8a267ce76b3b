"""Encrypted bucket snapshots (age) and `restore-files`, through the command line: a real S3
server holds the app's bucket and the backup store, and the store shows none of the data."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from tests.test_backup_restore import Env, _keys, _one_line_error
from tests.test_backup_restore import env as env  # the fixture, reused
from tests.test_encrypted_backups import Key, _with, objects_holding
from tests.test_encrypted_backups import keys as keys  # the fixture, reused
from tests.test_files_backup import dir_contents, s3_contents

pytestmark = [pytest.mark.postgres, pytest.mark.s3, pytest.mark.prefect]


def _app_bucket(env: Env, marker: str) -> tuple[str, dict[str, bytes]]:
    """The app's bucket, with the marker in contents, in a key and in user metadata."""
    bucket = f"app-{secrets.token_hex(4)}"
    client = env.client()
    client.create_bucket(Bucket=bucket)
    content = {
        f"avatars/{marker}.txt": b"an avatar",
        "notes/a.txt": f"the note of {marker}".encode() * 100,
        "big/blob.bin": secrets.token_bytes(3 * 1024 * 1024),
    }
    for key, body in content.items():
        client.put_object(Bucket=bucket, Key=f"uploads/{key}", Body=body, Metadata={"who": marker})
    return bucket, content


def _snapshot(env: Env, source: str, key: Key | None) -> dict[str, object]:
    extra = {"SLIPWAY_BACKUP_RECIPIENTS": key.recipient} if key else {}
    out = env.run("snapshot", source, "--name", "uploads", "--json", extra=extra, check=True)
    manifest: dict[str, object] = json.loads(out.stdout)
    return manifest


def test_encrypted_snapshot_round_trip_and_no_marker_in_the_store(
    env: Env, keys: tuple[Key, Key, Path]
) -> None:
    a, _, _ = keys
    marker = f"slipway-marker-{secrets.token_hex(8)}"
    app, content = _app_bucket(env, marker)
    m = _snapshot(env, f"s3://{app}/uploads", a)
    assert (m["encrypted"], m["recipients"], m["object_count"]) == (True, [a.recipient], 3)
    archive = m["archive"]
    assert isinstance(archive, dict)
    assert str(archive["key"]).endswith("files.tar.zst.age")
    assert objects_holding(env, marker) == []  # archive, index, manifest: none shows it
    assert any(k.endswith("/index.json.age") for k in _keys(env))

    dst = f"dst-{secrets.token_hex(4)}"
    env.client().create_bucket(Bucket=dst)
    back = env.run(
        "restore-files", "uploads@latest", f"s3://{dst}/uploads", "--json",
        extra=_with(a.file), check=True,
    )  # fmt: skip
    assert json.loads(back.stdout)["restored"] == 3
    assert s3_contents(env.s3, dst, "uploads/") == content
    head = env.client().head_object(Bucket=dst, Key=f"uploads/avatars/{marker}.txt")
    assert head["Metadata"] == {"who": marker}

    # The check has teeth: unencrypted, the manifest and archive show the marker.
    clear = _snapshot(env, f"s3://{app}/uploads", None)
    assert [k for k in objects_holding(env, marker) if str(clear["id"]) in k]


def test_snapshot_failures_are_one_line_and_write_nothing(
    env: Env, keys: tuple[Key, Key, Path], tmp_path: Path
) -> None:
    a, b, _ = keys
    files = tmp_path / "files"
    (files / "docs").mkdir(parents=True)
    (files / "docs" / "a.txt").write_text("a" * 200_000)
    m = _snapshot(env, str(files), a)
    archive = m["archive"]
    assert isinstance(archive, dict)
    dst = tmp_path / "back"

    def refused(extra: dict[str, str], *needles: str) -> None:
        proc = env.run("restore-files", f"uploads@{m['id']}", str(dst), extra=extra)
        _one_line_error(proc, *needles)
        assert not dst.exists() or dir_contents(dst) == {}

    refused({}, "is encrypted to", a.recipient, "no identity", "SLIPWAY_BACKUP_IDENTITY_FILE")
    refused(_with(b.file), "none of the 1 given identities matches", a.recipient)
    client = env.client()
    body = bytearray(client.get_object(Bucket=env.bucket, Key=str(archive["key"]))["Body"].read())
    body[len(body) // 2] ^= 0x01
    client.put_object(Bucket=env.bucket, Key=str(archive["key"]), Body=bytes(body))
    refused(_with(a.file), "damaged", "nothing was restored")
    client.put_object(Bucket=env.bucket, Key=str(archive["key"]), Body=bytes(body[:-500]))
    refused(_with(a.file), "damaged", "nothing was restored")


def test_snapshot_key_rotation(env: Env, keys: tuple[Key, Key, Path], tmp_path: Path) -> None:
    a, b, both = keys
    files = tmp_path / "files"
    files.mkdir()
    (files / "one.txt").write_text("under key A")
    under_a = _snapshot(env, str(files), a)
    (files / "two.txt").write_text("under key B")
    under_b = _snapshot(env, str(files), b)
    plain = _snapshot(env, str(files), None)
    assert plain["encrypted"] is False
    expected = {
        str(under_a["id"]): {"one.txt": b"under key A"},
        str(under_b["id"]): {"one.txt": b"under key A", "two.txt": b"under key B"},
    }
    for snapshot_id, contents in expected.items():
        dst = tmp_path / f"back-{snapshot_id}"
        env.run("restore-files", f"uploads@{snapshot_id}", str(dst), extra=_with(both), check=True)
        assert dir_contents(dst) == contents
    env.run("restore-files", f"uploads@{plain['id']}", str(tmp_path / "plain"), check=True)
    assert dir_contents(tmp_path / "plain") == expected[str(under_b["id"])]
