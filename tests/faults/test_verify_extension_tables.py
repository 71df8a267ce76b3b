"""A table owned by an extension does not fail every verify.

pg_dump leaves out the tables an extension creates (CREATE EXTENSION makes them again),
but dumps the data of its configuration tables. No extension shipped with PostgreSQL 15
owns a table, so the test installs a tiny one of its own, and removes it after.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.test_backup_restore import Env
from tests.test_backup_restore import env as env  # the fixture, reused

pytestmark = [pytest.mark.postgres, pytest.mark.s3, pytest.mark.prefect]

EXTENSION_SQL = """
CREATE TABLE slipway_ext_cache (id int PRIMARY KEY, note text);
INSERT INTO slipway_ext_cache VALUES (1, 'made by the extension'), (2, 'also');
CREATE TABLE slipway_ext_settings (name text PRIMARY KEY, standard bool NOT NULL DEFAULT false);
INSERT INTO slipway_ext_settings VALUES ('shipped', true);
SELECT pg_catalog.pg_extension_config_dump('slipway_ext_settings', 'WHERE NOT standard');
"""


@pytest.fixture
def extension(env: Env) -> Iterator[str]:
    """A table-owning extension installed where the test server finds extensions."""
    sharedir = subprocess.run(
        [str(env.pg.bin_dir / "pg_config"), "--sharedir"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    name = f"slipway_test_{secrets.token_hex(3)}"
    directory = Path(sharedir) / "extension"
    control, script = directory / f"{name}.control", directory / f"{name}--1.0.sql"
    try:
        control.write_text("comment = 'Slipway test'\ndefault_version = '1.0'\nschema = public\n")
        script.write_text(EXTENSION_SQL)
    except PermissionError:
        pytest.skip(f"cannot install a test extension into {directory}")
    try:
        yield name
    finally:
        control.unlink(missing_ok=True)
        script.unlink(missing_ok=True)


def test_extension_tables_are_counted_like_pg_dump_does(env: Env, extension: str) -> None:
    with psycopg.connect(env.pg.url(env.database), autocommit=True) as conn:
        conn.execute(f"CREATE EXTENSION {extension}")  # type: ignore[arg-type]
        conn.execute("INSERT INTO slipway_ext_settings VALUES ('mine', false)")

    backup = json.loads(env.run("backup", "--json", check=True).stdout)
    proc = env.run("verify", backup["id"], "--drill", "--json")
    assert proc.returncode == 0, proc.stderr
    verified = json.loads(proc.stdout)
    assert verified["ok"] is True

    tables = {f"{t['schema_name']}.{t['table']}": t["rows"] for t in backup["tables"]}
    assert "public.slipway_ext_cache" not in tables  # not dumped: the extension makes it
    assert tables["public.slipway_ext_settings"] == 2  # a configuration table: dumped
    assert f"({len(tables)} tables)" in verified["detail"]
    assert "rows match" in verified["detail"]
