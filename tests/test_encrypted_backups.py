"""Encrypted database backups (age), end to end: real PostgreSQL, S3 server, Prefect, `age`.

Backups need only the recipients (public keys); drills and restores need an identity.
Failures are one line, and the target database is compared row for row afterwards.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import yaml
import zstandard

from tests.commands import run
from tests.pg_fixtures import create_database, snapshot
from tests.test_backup_restore import Env, _keys, _one_line_error
from tests.test_backup_restore import env as env  # the fixture, reused

pytestmark = [pytest.mark.postgres, pytest.mark.s3, pytest.mark.prefect]


@dataclass
class Key:
    """An age identity file and its recipient."""

    file: Path
    recipient: str


def _age_keygen(path: Path) -> Key:
    """A key made by Debian's age-keygen: Slipway reads age's own key files."""
    if shutil.which("age-keygen") is None:
        pytest.skip("no age-keygen here: apt-get install age")
    subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
    public = subprocess.run(["age-keygen", "-y", str(path)], check=True, capture_output=True)
    return Key(path, public.stdout.decode().strip())


@pytest.fixture
def keys(tmp_path: Path, env: Env) -> tuple[Key, Key, Path]:
    """Key A (age-keygen), key B (`slipway keygen -o`), and a file holding both identities."""
    a = _age_keygen(tmp_path / "a.txt")
    made = env.run("keygen", "-o", str(tmp_path / "b.txt"), check=True)
    assert made.stdout == ""
    b = Key(tmp_path / "b.txt", made.stderr.strip().removeprefix("Public key: "))
    both = tmp_path / "both.txt"
    both.write_text(a.file.read_text() + "\n# the new key\n" + b.file.read_text())
    return a, b, both


def _to(key: Key) -> dict[str, str]:
    return {"SLIPWAY_BACKUP_RECIPIENTS": key.recipient}


def _with(identity_file: Path) -> dict[str, str]:
    return {"SLIPWAY_BACKUP_IDENTITY_FILE": str(identity_file)}


def _backup(env: Env, extra: dict[str, str]) -> dict[str, object]:
    manifest: dict[str, object] = json.loads(
        env.run("backup", "--globals", "--json", extra=extra, check=True).stdout
    )
    return manifest


def _databases(env: Env) -> set[str]:
    with psycopg.connect(env.pg.url(), autocommit=True) as conn:
        return {str(r[0]) for r in conn.execute("SELECT datname FROM pg_database")}


def _add_marker(env: Env) -> str:
    marker = f"slipway-marker-{secrets.token_hex(8)}"
    with psycopg.connect(env.pg.url(env.database), autocommit=True) as conn:
        conn.execute("CREATE TABLE app.notes (id int PRIMARY KEY, body text)")
        conn.execute(
            "INSERT INTO app.notes SELECT g, %s || ' note ' || g FROM generate_series(1, 50) g",
            (marker,),
        )
    return marker


def _readable_forms(body: bytes) -> list[bytes]:
    """The object's bytes, and their zstd decompression when they are zstd."""
    forms = [body]
    with contextlib.suppress(zstandard.ZstdError):
        forms.append(zstandard.ZstdDecompressor().decompressobj().decompress(body))
    return forms


def objects_holding(env: Env, marker: str) -> list[str]:
    """Every object of the store (dumps, globals, manifests...) whose bytes show `marker`."""
    client = env.client()
    found = []
    for key in _keys(env):
        body = client.get_object(Bucket=env.bucket, Key=key)["Body"].read()
        if any(marker.encode() in form for form in _readable_forms(body)):
            found.append(key)
    return found


def test_encrypted_round_trip_and_no_marker_in_any_object(
    env: Env, keys: tuple[Key, Key, Path]
) -> None:
    a, _, _ = keys
    marker = _add_marker(env)
    m = _backup(env, _to(a))
    assert m["encrypted"] is True
    assert m["recipients"] == [a.recipient]
    dump = m["dump"]
    assert isinstance(dump, dict)
    assert str(dump["key"]).endswith("dump.pgc.zst.age")
    assert objects_holding(env, marker) == []
    body = env.client().get_object(Bucket=env.bucket, Key=str(dump["key"]))["Body"].read()
    assert body.startswith(b"age-encryption.org/v1\n")
    assert a.file.read_text().splitlines()[-1] not in json.dumps(m)  # no identity anywhere

    listed = json.loads(env.run("backups", "list", "--json", check=True).stdout)
    assert [(b["id"], b["encrypted"]) for b in listed] == [(m["id"], True)]
    table = env.run("backups", "list", check=True).stdout.splitlines()
    assert table[1].split()[-2:] == ["yes", "-"]  # ENCRYPTED, APP VERSION

    plain = json.loads(env.run("verify", str(m["id"]), "--json", check=True).stdout)
    assert plain["ok"] is True
    assert "encrypted" in plain["detail"]
    drilled = env.run("verify", str(m["id"]), "--drill", "--json", extra=_with(a.file), check=True)
    assert "rows match" in json.loads(drilled.stdout)["detail"]

    target = f"restored_{secrets.token_hex(3)}"
    env.restore(str(m["id"]), target, extra=_with(a.file), check=True)
    assert snapshot(env.pg, target) == snapshot(env.pg, env.database)

    # The check has teeth: unencrypted, the same marker shows in the stored dump.
    clear = _backup(env, {})
    assert clear["encrypted"] is False
    assert [k for k in objects_holding(env, marker) if str(clear["id"]) in k]


def test_debian_age_and_pg_restore_read_what_slipway_stored(
    env: Env, keys: tuple[Key, Key, Path], tmp_path: Path
) -> None:
    a, _, _ = keys
    m = _backup(env, _to(a))
    dump = m["dump"]
    assert isinstance(dump, dict)
    path = tmp_path / "dump.pgc.zst.age"
    env.client().download_file(env.bucket, str(dump["key"]), str(path))
    shell = {**env.vars, "PGHOST": env.pg.host, "PGPORT": str(env.pg.port), "PGUSER": env.pg.user}
    pg_restore = env.pg.bin_dir / "pg_restore"
    listing = run(["sh", "-c", f"age -d -i {a.file} {path} | zstd -d | {pg_restore} --list"], shell)
    assert listing.returncode == 0, listing.stderr
    assert "TABLE DATA app users" in listing.stdout
    # A restore by hand, as the README shows it, equals the original row for row.
    target = create_database(env.pg, sql="SELECT 1")
    by_hand = run(
        ["sh", "-c", f"age -d -i {a.file} {path} | zstd -d | {pg_restore} -d {target}"], shell
    )
    assert by_hand.returncode == 0, by_hand.stderr
    assert snapshot(env.pg, target) == snapshot(env.pg, env.database)


def _put(env: Env, key: str, body: bytes) -> None:
    env.client().put_object(Bucket=env.bucket, Key=key, Body=body)


def test_each_failure_is_one_line_and_the_target_untouched(
    env: Env, keys: tuple[Key, Key, Path]
) -> None:
    a, b, _ = keys
    m = _backup(env, _to(a))
    backup_id = str(m["id"])
    dump = m["dump"]
    assert isinstance(dump, dict)
    key = str(dump["key"])
    original = env.client().get_object(Bucket=env.bucket, Key=key)["Body"].read()
    target = create_database(
        env.pg, "CREATE TABLE keep_me (id int); INSERT INTO keep_me VALUES (42);"
    )
    before, databases = snapshot(env.pg, target), _databases(env)

    def refused(extra: dict[str, str], *needles: str) -> str:
        line = _one_line_error(env.restore(backup_id, target, "--yes", extra=extra), *needles)
        assert snapshot(env.pg, target) == before
        assert _databases(env) == databases  # no side database left either
        return line

    line = refused({}, "is encrypted to", a.recipient, "SLIPWAY_BACKUP_IDENTITY_FILE")
    assert "no identity" in line
    line = refused(_with(b.file), "none of the 1 given identities matches", a.recipient)
    assert b.file.read_text().splitlines()[-1] not in line
    missing = refused(_with(b.file.with_name("nope.txt")), "cannot read", "nope.txt")
    assert "SLIPWAY_BACKUP_IDENTITY_FILE" in missing
    _one_line_error(env.run("verify", backup_id, "--drill"), "no identity")

    _put(env, key, original[: len(original) - 1000])
    refused(_with(a.file), "damaged", "bytes stored")

    flipped = bytearray(original)
    flipped[-100] ^= 0x01  # in age's last 64 KiB chunk: read after all the others
    _put(env, key, bytes(flipped))
    refused(_with(a.file), "damaged", "checksum")
    _one_line_error(env.run("verify", backup_id), "damaged", "checksum")  # no key needed

    # The manifest rewritten to match the flipped bytes: age's authentication refuses them.
    # Only the schema may have gone into the side database; the target is never touched.
    manifest_key = key.rsplit("/", 1)[0] + "/manifest.json"
    stored = json.loads(env.client().get_object(Bucket=env.bucket, Key=manifest_key)["Body"].read())
    stored["dump"]["sha256"] = hashlib.sha256(bytes(flipped)).hexdigest()
    _put(env, manifest_key, json.dumps(stored).encode())
    refused(_with(a.file), "damaged", "age refused it")


def test_invalid_recipient_fails_before_anything_is_dumped(
    env: Env, keys: tuple[Key, Key, Path]
) -> None:
    a, _, _ = keys
    _one_line_error(
        env.run("backup", extra={"SLIPWAY_BACKUP_RECIPIENTS": f"{a.recipient},age1notakey"}),
        "'age1notakey'",
        "not an age recipient",
        "SLIPWAY_BACKUP_RECIPIENTS",
    )
    secret = a.file.read_text().splitlines()[-1]
    proc = env.run("backup", extra={"SLIPWAY_BACKUP_RECIPIENTS": secret})
    line = _one_line_error(proc, "identity (a secret key), not a recipient")
    assert secret not in proc.stderr + proc.stdout
    assert secret not in line
    assert _keys(env) == []  # not even a lock or an owner file


def test_key_rotation_and_unencrypted_backups_still_restore(
    env: Env, keys: tuple[Key, Key, Path]
) -> None:
    a, b, both = keys
    old = _backup(env, {})
    under_a = _backup(env, _to(a))
    under_b = _backup(env, {"SLIPWAY_BACKUP_RECIPIENTS": f" {b.recipient} ,"})
    assert under_b["recipients"] == [b.recipient]
    listed = json.loads(env.run("backups", "list", "--json", check=True).stdout)
    assert [x["encrypted"] for x in listed] == [True, True, False]  # newest first
    expected = snapshot(env.pg, env.database)
    for m, extra in ((old, {}), (under_a, _with(both)), (under_b, _with(both))):
        target = f"rotated_{secrets.token_hex(3)}"
        env.restore(str(m["id"]), target, extra=extra, check=True)
        assert snapshot(env.pg, target) == expected


def test_an_environment_file_holds_the_store_keys(
    env: Env, keys: tuple[Key, Key, Path], tmp_path: Path
) -> None:
    """`store.encryption_recipients` and `encryption_identity` in an environment file: its
    backups are encrypted, and restore with the store block's identity alone (a release's
    rollback restores this way)."""
    a, _, _ = keys
    name = f"enc-{secrets.token_hex(3)}"
    spec = {
        "name": name,
        "database": {"url": env.vars["DATABASE_URL"], "password": "${PG_SECRET}"},
        "store": {
            "url": f"s3://{env.bucket}/nightly",
            "endpoint_url": env.s3.endpoint_url,
            "region": env.s3.region,
            "access_key_id": env.s3.access_key,
            "secret_access_key": "${S3_SECRET}",
            "encryption_recipients": a.recipient,
            "encryption_identity": "${AGE_IDENTITY}",
        },
        "target": {"project_directory": str(tmp_path), "services": ["api"]},
    }
    path = tmp_path / "env.yaml"
    path.write_text(yaml.safe_dump(spec))
    identity = a.file.read_text()
    applying = {"PG_SECRET": env.pg.password, "S3_SECRET": env.s3.secret_key}
    env.run("env", "apply", str(path), extra={**applying, "AGE_IDENTITY": identity}, check=True)

    blocks = ("--database-block", f"{name}-database", "--store-block", f"{name}-store")
    marker = _add_marker(env)
    m = json.loads(env.run("backup", *blocks, "--json", check=True).stdout)
    assert (m["encrypted"], m["recipients"]) == (True, [a.recipient])
    assert objects_holding(env, marker) == []
    target = f"from_block_{secrets.token_hex(3)}"
    # No SLIPWAY_BACKUP_IDENTITY_FILE: the block's identity is the only key.
    env.restore(str(m["id"]), target, "--store-block", f"{name}-store", check=True)
    assert snapshot(env.pg, target) == snapshot(env.pg, env.database)
    # The check has teeth: without the block, no identity, no restore.
    refused = env.restore(str(m["id"]), f"{target}_x")
    _one_line_error(refused, "identity")


def test_keygen_writes_what_age_reads(env: Env, tmp_path: Path) -> None:
    printed = env.run("keygen", check=True).stdout.splitlines()
    assert printed[0].startswith("# created: ")
    assert printed[1].startswith("# public key: age1")
    assert printed[2].startswith("AGE-SECRET-KEY-1")
    path = tmp_path / "key.txt"
    path.write_text("\n".join(printed) + "\n")
    public = run(["age-keygen", "-y", str(path)], os.environ).stdout.strip()
    assert public == printed[1].removeprefix("# public key: ")

    out = tmp_path / "new.txt"
    made = env.run("keygen", "-o", str(out), check=True)
    assert out.stat().st_mode & 0o777 == 0o600
    assert made.stderr.startswith("Public key: age1")
    again = env.run("keygen", "-o", str(out))
    assert again.returncode == 1
    _one_line_error(again, "exists", "--output")
    assert out.read_text().splitlines()[-1].startswith("AGE-SECRET-KEY-1")
