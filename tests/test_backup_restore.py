"""Database backups end to end: real PostgreSQL, real S3 server, real Prefect server."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from tests.commands import REPO as REPO  # re-exported: other test modules import them here
from tests.commands import SLIPWAY as SLIPWAY
from tests.commands import slipway as slipway
from tests.harness.postgres import PostgresInfo
from tests.harness.prefect_server import PrefectInfo
from tests.harness.s3 import S3Info
from tests.pg_fixtures import create_database, snapshot
from tests.s3_fault_proxy import STORAGE_FULL, fault_proxy

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

pytestmark = [pytest.mark.postgres, pytest.mark.s3, pytest.mark.prefect]


@dataclass
class Env:
    pg: PostgresInfo
    s3: S3Info
    bucket: str
    database: str
    vars: dict[str, str]

    def run(
        self, *args: str, extra: dict[str, str] | None = None, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        proc = slipway(*args, env={**self.vars, **(extra or {})})
        if check and proc.returncode != 0:
            raise AssertionError(f"slipway {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def client(self) -> S3Client:
        return self.s3.client()

    def restore(
        self,
        backup: str,
        target: str,
        *flags: str,
        extra: dict[str, str] | None = None,
        check: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """`slipway restore` of this database's backup into `target` on the same server."""
        return self.run(
            "restore",
            backup,
            "--target-database-url",
            self.pg.url_without_password(target),
            "--source-database",
            self.database,
            *flags,
            extra=extra,
            check=check,
        )


@pytest.fixture
def env(postgres: PostgresInfo, s3: S3Info, prefect_server: PrefectInfo, tmp_path: Path) -> Env:
    bucket = f"backups-{secrets.token_hex(4)}"
    s3.client().create_bucket(Bucket=bucket)
    database = create_database(postgres)
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "PG", "DATABASE_URL", "SLIPWAY_"))
    }
    return Env(
        postgres,
        s3,
        bucket,
        database,
        {
            **base,
            **s3.env(),
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
            "AWS_CONFIG_FILE": "/dev/null",
            "DATABASE_URL": postgres.url_without_password(database),
            "PGPASSWORD": postgres.password,
            "SLIPWAY_BACKUP_URL": f"s3://{bucket}/nightly",
            "PREFECT_API_URL": prefect_server.api_url,
            "TMPDIR": str(tmp_path),  # where restores keep the archive while they run
        },
    )


def _one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert proc.returncode != 0, proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle.lower() in lines[0].lower(), lines[0]
    return lines[0]


def _restore_files_left(env: Env) -> list[Path]:
    return list(Path(env.vars["TMPDIR"]).glob("slipway-restore-*"))


def _keys(env: Env) -> list[str]:
    page = env.client().list_objects_v2(Bucket=env.bucket)
    return sorted(o["Key"] for o in page.get("Contents", []))


def test_backup_verify_drill_restore_round_trip(env: Env) -> None:
    backup = json.loads(env.run("backup", "--json", check=True).stdout)
    backup_id = backup["id"]
    assert backup["dump"]["size"] > 0
    assert backup["raw_bytes"] > backup["dump"]["size"]
    counts = {f"{t['schema_name']}.{t['table']}": t["rows"] for t in backup["tables"]}
    assert counts["app.users"] == 500
    assert counts["app.invoices"] == 2000

    listed = json.loads(env.run("backups", "list", "--json", check=True).stdout)
    assert [b["id"] for b in listed] == [backup_id]

    verified = json.loads(env.run("verify", backup_id, "--drill", "--json", check=True).stdout)
    assert verified["ok"] is True
    assert "rows match" in verified["detail"]
    listed = json.loads(env.run("backups", "list", "--json", check=True).stdout)
    assert listed[0]["verified"] is True

    # Into a new database: equal to the original, row by row and in schema.
    target = f"restored_{secrets.token_hex(3)}"
    out = env.restore("latest", target, "--json", "--verbose", check=True)
    assert json.loads(out.stdout)["previous"] is None
    assert snapshot(env.pg, target) == snapshot(env.pg, env.database)
    assert _restore_files_left(env) == []  # the archive's scratch directory is gone

    # A non-empty target is refused without --yes, and left as it was.
    with psycopg.connect(env.pg.url(target), autocommit=True) as conn:
        conn.execute("DELETE FROM app.invoices WHERE id % 2 = 0")
    changed = snapshot(env.pg, target)
    refused = env.restore(
        backup_id,
        target,
    )
    _one_line_error(refused, "not empty", "--yes")
    assert snapshot(env.pg, target) == changed
    assert _restore_files_left(env) == []

    replaced = json.loads(
        env.restore(
            backup_id,
            target,
            "--yes",
            "--json",
            check=True,
        ).stdout
    )
    assert snapshot(env.pg, target) == snapshot(env.pg, env.database)
    assert replaced["previous"]
    assert snapshot(env.pg, replaced["previous"]) == changed  # the old one is kept, intact


def test_flipped_byte_is_refused_and_target_untouched(env: Env) -> None:
    backup_id = json.loads(env.run("backup", "--json", check=True).stdout)["id"]
    client = env.client()
    key = next(k for k in _keys(env) if k.endswith(".zst") and backup_id in k)
    body = bytearray(client.get_object(Bucket=env.bucket, Key=key)["Body"].read())
    body[len(body) // 2] ^= 0x01
    client.put_object(Bucket=env.bucket, Key=key, Body=bytes(body))

    _one_line_error(env.run("verify", backup_id), "damaged", "checksum")
    target = create_database(
        env.pg, "CREATE TABLE keep_me (id int); INSERT INTO keep_me VALUES (42);"
    )
    before = snapshot(env.pg, target)
    _one_line_error(
        env.restore(
            backup_id,
            target,
            "--yes",
        ),
        "damaged",
    )
    assert snapshot(env.pg, target) == before
    assert _restore_files_left(env) == []


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_killed_backup_leaves_no_backup_and_is_cleaned_next_run(env: Env, encrypted: bool) -> None:
    if encrypted:  # age in the pipeline: its thread and pipe die with the process
        from pyrage import x25519

        recipient = str(x25519.Identity.generate().to_public())
        env.vars["SLIPWAY_BACKUP_RECIPIENTS"] = recipient
    with psycopg.connect(env.pg.url(env.database), autocommit=True) as conn:
        # Incompressible rows, so the dump is big enough to kill in the middle of its upload.
        conn.execute(
            "CREATE TABLE blob AS SELECT g AS id, array_to_string(ARRAY("
            "SELECT md5(random()::text || i) FROM generate_series(1, 64) s(i) WHERE g > 0), '') AS b "
            "FROM generate_series(1, 60000) g"
        )
    proc = subprocess.Popen(
        [*SLIPWAY, "backup", "--level", "1"],
        env=env.vars,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    client = env.client()
    deadline = time.monotonic() + 120
    uploads: list[Any] = []
    while time.monotonic() < deadline and proc.poll() is None:
        uploads = client.list_multipart_uploads(Bucket=env.bucket).get("Uploads", [])
        if uploads:
            break
        time.sleep(0.05)
    assert uploads, "the backup never started a multi-part upload"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()

    assert not [k for k in _keys(env) if k.endswith("manifest.json")]
    assert json.loads(env.run("backups", "list", "--json", check=True).stdout) == []

    env.run("backup", "--json", check=True)
    assert client.list_multipart_uploads(Bucket=env.bucket).get("Uploads", []) == []
    manifests = [k for k in _keys(env) if k.endswith("manifest.json")]
    assert len(manifests) == 1
    folders = {k.rsplit("/", 2)[0] for k in _keys(env)}
    assert len(folders) == 1  # nothing of the killed backup remains
    assert any(k.endswith(".age") for k in _keys(env)) == encrypted


@pytest.mark.parametrize(
    "case",
    [
        "wrong-password",
        "unreachable-db",
        "missing-bucket",
        "missing-credentials",
        "wrong-credentials",
        "bad-url",
    ],
)
def test_bad_input_one_line_error_and_no_manifest(env: Env, case: str) -> None:
    extra: dict[str, str] = {}
    needles: tuple[str, ...] = ()
    if case == "wrong-password":
        extra, needles = {"PGPASSWORD": "not-the-password"}, ("password", env.pg.user)
    elif case == "unreachable-db":
        extra = {"DATABASE_URL": f"postgresql://postgres@127.0.0.1:1/{env.database}"}
        needles = ("cannot reach", "127.0.0.1:1")
    elif case == "missing-bucket":
        extra, needles = (
            {"SLIPWAY_BACKUP_URL": "s3://no-such-bucket-here/x"},
            ("no-such-bucket-here", "does not exist"),
        )
    elif case == "missing-credentials":
        extra = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}
        needles = ("no s3 credentials", "AWS_ACCESS_KEY_ID")
    elif case == "wrong-credentials":
        extra, needles = {"AWS_SECRET_ACCESS_KEY": "wrong-secret"}, ("credentials",)
    elif case == "bad-url":
        extra, needles = {"SLIPWAY_BACKUP_URL": "bucket-without-scheme"}, ("s3://bucket/prefix",)
    vars_ = {k: v for k, v in {**env.vars, **extra}.items() if v != ""}
    proc = slipway("backup", env=vars_)
    _one_line_error(proc, *needles)
    assert not [k for k in _keys(env) if k.endswith("manifest.json")]


def test_password_never_in_arguments_output_parameters_or_artifacts(
    env: Env, prefect_server: PrefectInfo
) -> None:
    password = env.pg.password
    seen: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                if "pg_dump" in text or "slipway" in text or "deployments.cli" in text:
                    seen.append(text)
            time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        # Even with the password inside DATABASE_URL it must not leak anywhere.
        out = env.run(
            "backup",
            "--json",
            "--verbose",
            extra={"DATABASE_URL": env.pg.url(env.database)},
            check=True,
        )
    finally:
        stop.set()
        watcher.join()
    assert any("pg_dump" in s for s in seen), "the watcher never saw pg_dump"
    assert not [s for s in seen if password in s]
    assert password not in out.stdout
    assert password not in out.stderr

    import httpx

    api = prefect_server.api_url
    runs = httpx.post(f"{api}/flow_runs/filter", json={"limit": 200}).json()
    assert runs
    assert password not in json.dumps([r["parameters"] for r in runs])
    artifacts = httpx.post(f"{api}/artifacts/filter", json={"limit": 200}).json()
    assert any(a.get("key") == "backup-report" for a in artifacts)
    assert password not in json.dumps(artifacts)
    logs = httpx.post(f"{api}/logs/filter", json={"limit": 200}).json()
    assert password not in json.dumps(logs)


def test_gzip_and_globals(env: Env) -> None:
    m = json.loads(
        env.run("backup", "--compression", "gzip", "--globals", "--json", check=True).stdout
    )
    assert m["compression"] == "gzip"
    assert m["dump"]["key"].endswith(".gz")
    import zstandard

    body = env.client().get_object(Bucket=env.bucket, Key=m["globals"]["key"])["Body"].read()
    assert b"CREATE ROLE postgres" in zstandard.ZstdDecompressor().decompressobj().decompress(body)
    verified = json.loads(env.run("verify", m["id"], "--drill", "--json", check=True).stdout)
    assert "rows match" in verified["detail"]


def test_restore_works_while_prefect_server_is_down(env: Env) -> None:
    backup_id = json.loads(env.run("backup", "--json", check=True).stdout)["id"]
    target = f"offline_{secrets.token_hex(3)}"
    down = {"PREFECT_API_URL": "http://127.0.0.1:9/api"}
    out = env.restore(backup_id, target, extra=down, check=True)
    assert "does not answer" in out.stderr
    assert snapshot(env.pg, target) == snapshot(env.pg, env.database)
    # A restore that fails meanwhile says only why it failed, in one line.
    failed = env.restore("20000101T000000Z-0000", f"offline_{secrets.token_hex(3)}", extra=down)
    assert failed.returncode == 1, failed.stderr
    assert len(failed.stderr.strip().splitlines()) == 1, failed.stderr
    assert failed.stderr.startswith("error: ")


@pytest.mark.parametrize("server_major", [16, 99])
def test_pg_dump_older_than_server_is_refused(postgres: PostgresInfo, server_major: int) -> None:
    from blocks.errors import SlipwayError
    from tasks.postgres.connection import pg_tool

    with pytest.raises(SlipwayError) as err:
        pg_tool("pg_dump", server_major)
    message = str(err.value)
    assert "older than the server" in message
    assert f"postgresql-client-{server_major}" in message
    assert "\n" not in message


def test_backup_from_saved_blocks(env: Env) -> None:
    from pydantic import SecretStr

    from blocks.object_storage import ObjectStorage
    from blocks.postgres import PostgresDatabase

    name = f"t-{secrets.token_hex(3)}"
    PostgresDatabase(
        host=env.pg.host,
        port=env.pg.port,
        database=env.database,
        user=env.pg.user,
        password=SecretStr(env.pg.password),
    ).save(name)
    ObjectStorage(
        bucket=env.bucket,
        prefix="from-blocks",
        endpoint_url=env.s3.endpoint_url,
        access_key_id=env.s3.access_key,
        secret_access_key=SecretStr(env.s3.secret_key),
    ).save(name)
    bare = {
        k: v
        for k, v in env.vars.items()
        if not k.startswith(("AWS_", "PG", "DATABASE_URL", "SLIPWAY_"))
    }
    out = slipway("backup", "--database-block", name, "--store-block", name, "--json", env=bare)
    assert out.returncode == 0, out.stderr
    key = json.loads(out.stdout)["dump"]["key"]
    assert key.startswith(f"from-blocks/postgres/{env.database}/")

    import httpx

    docs = httpx.post(f"{env.vars['PREFECT_API_URL']}/block_documents/filter", json={}).json()
    dumped = json.dumps(docs)
    assert name in dumped
    assert env.pg.password not in dumped
    assert env.s3.secret_key not in dumped

    missing = slipway(
        "backup", "--database-block", "no-such-block", "--store-block", name, env=bare
    )
    _one_line_error(missing, "no-such-block")


def test_full_store_one_line_error_and_nothing_left(env: Env) -> None:
    # The real server behind a proxy that answers every write the way a full MinIO does.
    with fault_proxy(
        env.s3.endpoint_url, lambda method, path: method == "PUT", STORAGE_FULL
    ) as proxy:
        proc = slipway("backup", env={**env.vars, "AWS_ENDPOINT_URL_S3": proxy})
    _one_line_error(proc, "is full", "XMinioStorageFull")
    assert not [k for k in _keys(env) if k.endswith("manifest.json")]
    assert env.client().list_multipart_uploads(Bucket=env.bucket).get("Uploads", []) == []
