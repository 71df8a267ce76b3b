"""Database names are one key segment, so `app/1999` cannot lie
inside `app`'s folder (a backup of `app` used to delete all of `app/1999`'s backups)."""

from __future__ import annotations

import json
from urllib.parse import quote

import psycopg
import pytest

from tasks.postgres.catalog import name_segment
from tests.pg_fixtures import RICH_SCHEMA
from tests.test_backup_restore import Env
from tests.test_backup_restore import env as env  # the fixture, reused

pytestmark = [pytest.mark.postgres, pytest.mark.s3, pytest.mark.prefect]


def test_name_segments_are_distinct_and_ordinary_names_unchanged() -> None:
    names = ["app", "app/1999", "app%2F1999", "app%1999", ".", "..", "a b", "ünï", "my-app_2.0"]
    segments = [name_segment(n) for n in names]
    assert len(set(segments)) == len(names)
    assert all("/" not in s and s not in {".", ".."} for s in segments)
    assert segments[1] == "app%2F1999"
    for ordinary in ("app", "a b", "ünï", "my-app_2.0"):
        assert name_segment(ordinary) == ordinary  # existing stores keep their keys


def test_backup_of_app_keeps_the_backups_of_app_slash_1999(env: Env) -> None:
    parent = env.database
    child = f"{parent}/1999"
    with psycopg.connect(env.pg.url(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{child}"')
    with psycopg.connect(env.pg.url(), dbname=child) as conn:
        conn.execute(RICH_SCHEMA)  # type: ignore[arg-type]
        conn.execute("DELETE FROM app.invoices WHERE id % 3 = 0")  # unlike the parent's
    child_env = {
        "DATABASE_URL": f"postgresql://{env.pg.user}@{env.pg.host}:{env.pg.port}/"
        + quote(child, safe="")
    }

    first = json.loads(env.run("backup", "--json", extra=child_env, check=True).stdout)
    second = json.loads(env.run("backup", "--json", extra=child_env, check=True).stdout)
    parents = json.loads(env.run("backup", "--json", check=True).stdout)

    listed = json.loads(env.run("backups", "list", "--json", extra=child_env, check=True).stdout)
    assert [b["id"] for b in listed] == [second["id"], first["id"]]
    assert {b["database"] for b in listed} == {child}
    for backup in (first, second):
        verified = json.loads(
            env.run("verify", backup["id"], "--json", extra=child_env, check=True).stdout
        )
        assert verified["ok"] is True
    listed = json.loads(env.run("backups", "list", "--json", check=True).stdout)
    assert [b["id"] for b in listed] == [parents["id"]]

    assert first["dump"]["key"].startswith(f"nightly/postgres/{parent}%2F1999/{first['id']}/")
    # An ordinary name keeps the key it always had.
    assert parents["dump"]["key"].startswith(f"nightly/postgres/{parent}/{parents['id']}/")
