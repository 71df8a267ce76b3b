"""`slipway mirror | snapshot | restore-files` end to end, and their one-line errors."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.harness.prefect_server import PrefectInfo
from tests.harness.s3 import S3Info
from tests.test_backup_restore import slipway
from tests.test_files_backup import new_bucket, put, s3_contents

pytestmark = [pytest.mark.s3, pytest.mark.s3b, pytest.mark.prefect]

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def env(s3: S3Info, s3b: S3Info, prefect_server: PrefectInfo) -> dict[str, str]:
    """The app's storage is `s3` (SLIPWAY_SOURCE_*), the backup store is `s3b` (AWS_*)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SLIPWAY_"))}
    return {
        **base,
        **s3.env("SLIPWAY_SOURCE_"),
        **s3b.env(),
        "PREFECT_API_URL": prefect_server.api_url,
    }


@pytest.fixture
def refusing_api() -> Iterator[str]:
    """An API address that answers 401 to everything but /health, as Prefect does to a
    wrong PREFECT_API_AUTH_STRING."""

    class Refuse(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status = 200 if self.path.endswith("/health") else 401
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        do_GET = do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api"
    finally:
        server.shutdown()
        server.server_close()


def ok(proc: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert proc.returncode == 0, proc.stderr
    data: dict[str, object] = json.loads(proc.stdout)
    return data


def test_mirror_snapshot_and_restore_files(s3: S3Info, s3b: S3Info, env: dict[str, str]) -> None:
    app = new_bucket(s3, "app")
    client = s3.client()
    files = {f"uploads/{i}/photo {i}.jpg": os.urandom(2000 + i) for i in range(5)}
    files["docs/ré sumé+1.pdf"] = os.urandom(4000)
    for key, body in files.items():
        put(client, app, key, body, ContentType="image/jpeg")
    store = new_bucket(s3b, "store")
    env["SLIPWAY_BACKUP_URL"] = f"s3://{store}/backups"

    dry = slipway("mirror", f"s3://{app}", f"s3://{store}/mirror", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert "6 to copy" in dry.stdout
    assert "copy   docs/ré sumé+1.pdf  (new)" in dry.stdout
    assert s3_contents(s3b, store) == {}

    mirror = ["mirror", f"s3://{app}", f"s3://{store}/mirror", "--json", "--verbose"]
    first = slipway(*mirror, env=env)
    assert ok(first)["copied"] == 6
    assert s3_contents(s3b, store, "mirror/") == files
    again = ok(slipway(*mirror, env=env))
    assert again["copied"] == 0
    assert again["unchanged"] == 6

    snap = ok(slipway("snapshot", f"s3://{app}", "--json", env=env))
    assert snap["object_count"] == 6
    assert snap["name"] == app

    # Disaster: the app's bucket loses files; each backup gives them back.
    lost = new_bucket(s3, "lost")
    restored = ok(
        slipway(
            "restore-files",
            f"{app}@latest",
            f"s3://{lost}",
            "--prefix",
            "uploads/",
            "--json",
            env=env,
        )
    )
    assert restored["restored"] == 5
    assert s3_contents(s3, lost) == {k: v for k, v in files.items() if k.startswith("uploads/")}
    from_mirror = new_bucket(s3, "again")
    restored = ok(
        slipway("restore-files", f"s3://{store}/mirror", f"s3://{from_mirror}", "--json", env=env)
    )
    assert restored["restored"] == 6
    assert s3_contents(s3, from_mirror) == files
    assert client.head_object(Bucket=from_mirror, Key="docs/ré sumé+1.pdf")["Metadata"] == {}

    # With --delete, the flow run deletes once the copies are all done.
    client.delete_object(Bucket=app, Key="docs/ré sumé+1.pdf")
    put(client, app, "uploads/new.jpg", b"new", ContentType="image/jpeg")
    synced = slipway(*mirror, "--delete", env=env)
    assert (ok(synced)["copied"], ok(synced)["deleted"]) == (1, 1)
    assert s3_contents(s3b, store, "mirror/") == s3_contents(s3, app)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("unknown bucket", "does not exist"),
        ("wrong credentials", "refused the credentials"),
        ("unreachable endpoint", "cannot reach the S3 endpoint"),
        ("destination inside source", "overlap"),
        ("Prefect API down", "does not answer"),
        ("Prefect API refuses the key", "refused the credentials (401)"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(
    case: str, expected: str, s3: S3Info, s3b: S3Info, env: dict[str, str], refusing_api: str
) -> None:
    app = new_bucket(s3, "app")
    put(s3.client(), app, "a.txt", b"a")
    store = new_bucket(s3b, "store")
    put(s3b.client(), store, "m/keep.txt", b"k")
    source, destination = f"s3://{app}", f"s3://{store}/m"
    wrong_secret = secrets.token_urlsafe(16)
    if case == "unknown bucket":
        source = f"s3://no-such-{secrets.token_hex(3)}"
    elif case == "wrong credentials":
        env["SLIPWAY_SOURCE_SECRET_ACCESS_KEY"] = wrong_secret
    elif case == "unreachable endpoint":
        env["SLIPWAY_SOURCE_ENDPOINT_URL"] = "http://127.0.0.1:9"
    elif case == "Prefect API down":  # no run could record it: nothing may start
        env["PREFECT_API_URL"] = "http://127.0.0.1:9/api"
    elif case == "Prefect API refuses the key":
        env["PREFECT_API_URL"] = refusing_api
    else:
        env.update(s3.env())  # both sides on the app's server, one inside the other
        destination = f"s3://{app}/backup"

    proc = slipway("mirror", source, destination, "--delete", env=env)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert expected in errors[0]
    assert wrong_secret not in proc.stderr
    assert s3_contents(s3b, store) == {"m/keep.txt": b"k"}
    assert s3_contents(s3, app) == {"a.txt": b"a"}


def test_snapshot_of_the_bucket_holding_the_store_is_refused(
    s3: S3Info, env: dict[str, str]
) -> None:
    app = new_bucket(s3, "app")
    put(s3.client(), app, "a.txt", b"a")
    env.update(s3.env())
    env["SLIPWAY_BACKUP_URL"] = f"s3://{app}/backups"
    proc = slipway("snapshot", f"s3://{app}", env=env)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: the backup store")
    assert "lies inside" in proc.stderr
    assert s3_contents(s3, app) == {"a.txt": b"a"}


def test_restore_files_from_an_unknown_snapshot(
    s3: S3Info, s3b: S3Info, env: dict[str, str]
) -> None:
    env["SLIPWAY_BACKUP_URL"] = f"s3://{new_bucket(s3b, 'store')}/backups"
    target = new_bucket(s3, "target")
    proc = slipway("restore-files", "nothing@latest", f"s3://{target}", env=env)
    assert proc.returncode == 1
    assert "error: no snapshots of 'nothing'" in proc.stderr
    assert s3_contents(s3, target) == {}
