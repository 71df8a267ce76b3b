"""A restore's swap off the happy path: writes racing it, long names, passwords in URLs.

The restore flow runs in this process against real PostgreSQL, S3 and Prefect servers.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest

from blocks.errors import SlipwayError
from tasks.postgres.catalog import MANIFEST, backup_folder, write_json
from tests.harness.postgres import PostgresInfo
from tests.harness.prefect_server import PrefectInfo
from tests.harness.s3 import S3Info
from tests.pg_fixtures import create_database, snapshot
from tests.test_pg_restore import UNORDERED, backup

pytestmark = [pytest.mark.postgres, pytest.mark.s3, pytest.mark.prefect]

RACES = 20
# How long after the restore's side database appears the writer writes: from at once
# (while pg_restore runs) to after the swap.
DELAYS = [0.0, 0.0, 0.01, 0.03, 0.1, 0.3]


@dataclass
class Source:
    pg: PostgresInfo
    database: str
    backup_id: str


@pytest.fixture(scope="module")
def source(postgres: PostgresInfo, s3: S3Info, prefect_server: PrefectInfo) -> Iterator[Source]:
    del prefect_server
    database = create_database(postgres, UNORDERED)
    entry, server, bucket = backup(postgres, s3, database)
    store = server.storage(bucket)
    write_json(
        store.client(),
        store,
        f"{backup_folder(store, database, entry.manifest.id)}/{MANIFEST}",
        entry.manifest,
    )
    with pytest.MonkeyPatch.context() as mp:
        for name, value in {
            **server.env(),
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
            "AWS_CONFIG_FILE": "/dev/null",
            "SLIPWAY_BACKUP_URL": f"s3://{bucket}",
            "PGPASSWORD": postgres.password,
        }.items():
            mp.setenv(name, value)
        yield Source(postgres, database, entry.manifest.id)


def restore(src: Source, target: str, yes: bool = False) -> dict[str, Any]:
    from flows.restore import restore_database

    result: dict[str, Any] = restore_database(
        target_database_url=src.pg.url_without_password(target),
        backup=src.backup_id,
        source_database=src.database,
        yes=yes,
    )
    return result


def databases(pg: PostgresInfo, like: str) -> list[str]:
    with psycopg.connect(pg.url(), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s ORDER BY 1", (like,)
        ).fetchall()
    return [str(r[0]) for r in rows]


def drop(pg: PostgresInfo, *names: str) -> None:
    with psycopg.connect(pg.url(), autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def holds_row(pg: PostgresInfo, database: str, token: str) -> bool:
    with psycopg.connect(pg.url(database)) as conn:
        exists = conn.execute("SELECT to_regclass('public.written_during_restore')").fetchone()
        if not exists or exists[0] is None:
            return False
        row = conn.execute("SELECT 1 FROM written_during_restore WHERE v = %s", (token,))
        return row.fetchone() is not None


@dataclass
class Writer:
    """Creates a table and inserts a row into the target once the restore is under way."""

    pg: PostgresInfo
    target: str
    delay: float
    token: str = field(default_factory=lambda: secrets.token_hex(8))
    committed: bool = False
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        side = self.target + r"\_slipway\_new\_%"
        while not self.stop.is_set() and not databases(self.pg, side):
            time.sleep(0.005)
        if self.stop.is_set():
            return
        time.sleep(self.delay)
        try:
            with psycopg.connect(self.pg.url(self.target)) as conn:
                conn.execute("CREATE TABLE written_during_restore (v text)")
                conn.execute("INSERT INTO written_during_restore VALUES (%s)", (self.token,))
            self.committed = True
        except psycopg.Error:
            pass  # refused or ended by the swap: nothing was written


def test_writes_during_a_restore_are_never_lost(source: Source) -> None:
    outcomes = []
    for race in range(RACES):
        target = create_database(source.pg, "SELECT 1", name=f"race_{secrets.token_hex(4)}")
        writer = Writer(source.pg, target, DELAYS[race % len(DELAYS)])
        thread = threading.Thread(target=writer.run)
        thread.start()
        try:
            result: dict[str, Any] | None = restore(source, target)
        except SlipwayError as exc:
            result = None
            message = str(exc)
            assert "not empty" in message, message
            assert "--yes" in message, message
            assert "\n" not in message
        finally:
            writer.stop.set()
            thread.join()
        kept = databases(source.pg, target + r"\_slipway\_old\_%")
        if result is not None:
            # The previous database is always kept, empty or not.
            assert result["previous"] in kept, result
            assert "public.c_users" in snapshot(source.pg, target)["rows"]
        else:
            assert kept == []
        where = [db for db in [target, *kept] if holds_row(source.pg, db, writer.token)]
        if writer.committed:
            assert where, f"race {race}: the row written during the restore was lost"
        outcomes.append((result is not None, writer.committed, tuple(where)))
        assert databases(source.pg, target + r"\_slipway\_new\_%") == []
        drop(source.pg, target, *kept)
    assert any(committed for _, committed, _ in outcomes), outcomes


def test_side_names_are_distinct_and_fit_postgresql() -> None:
    from tasks.postgres.swap import _is_side_of, side_name

    for target in ["app", "a" * 63, "é" * 30, "é" * 31, "x" + "日本" * 20, "ab€" * 15]:
        new, old = side_name(target, "new"), side_name(target, "old")
        assert new != old
        for name in (new, old):
            assert len(name.encode()) <= 63, name
            assert len(name.rsplit("_", 1)[1]) == 6  # the random tail, whole
        assert _is_side_of(new, target, "new")
        assert not _is_side_of(old, target, "new")


def test_long_multibyte_target_name_is_replaced_and_kept(source: Source) -> None:
    target = "é" * 27 + secrets.token_hex(3)  # 60 bytes
    assert len(target.encode()) == 60
    create_database(
        source.pg, "CREATE TABLE keep_me (id int); INSERT INTO keep_me VALUES (7);", target
    )
    before = snapshot(source.pg, target)
    result = restore(source, target, yes=True)
    assert snapshot(source.pg, target) == snapshot(source.pg, source.database)
    previous = result["previous"]
    assert previous
    assert previous != target
    assert len(previous.encode()) <= 63
    assert snapshot(source.pg, previous) == before
    # This target's side databases only: other tests' restores run on the same server.
    assert databases(source.pg, "éééééééééé%\\_slipway\\_new\\_%") == []


def test_password_in_target_url_is_refused_by_the_flow(source: Source) -> None:
    from flows.restore import restore_database

    target = f"with_password_{secrets.token_hex(3)}"
    # A role of its own: a flow's parameters are stored before it can refuse them, and the
    # session's other tests check that the server's own password is never stored.
    role, password = f"restorer_{secrets.token_hex(3)}", secrets.token_hex(12)
    with psycopg.connect(source.pg.url(), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN CREATEDB PASSWORD '{password}'")
    url = f"postgresql://{role}:{password}@{source.pg.host}:{source.pg.port}/{target}"
    with pytest.raises(SlipwayError) as err:
        restore_database(  # the right password: refused all the same, before any restore
            target_database_url=url,
            backup=source.backup_id,
            source_database=source.database,
        )
    message = str(err.value)
    assert "password" in message
    assert "PGPASSWORD" in message
    assert password not in message
    assert "\n" not in message
    assert databases(source.pg, target + "%") == []


def test_connections_blocked_by_a_swap_killed_midway_are_allowed_again(source: Source) -> None:
    """The state a restore killed inside its swap leaves: the target refuses connections,
    and the side database's comment says a swap blocked them."""
    from tasks.postgres.swap import BLOCKED, side_name

    target = create_database(source.pg, "CREATE TABLE keep_me (id int);")
    side = side_name(target, "new")
    with psycopg.connect(source.pg.url(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{side}"')
        conn.execute(f"COMMENT ON DATABASE \"{side}\" IS '{BLOCKED.format(target=target)}'")
        conn.execute(f'ALTER DATABASE "{target}" ALLOW_CONNECTIONS false')
    result = restore(source, target, yes=True)
    said = " ".join(result["leftovers_removed"])
    assert f"connections to database {target!r} allowed again" in said
    assert side in said
    assert databases(source.pg, side) == []
    assert snapshot(source.pg, target) == snapshot(source.pg, source.database)
    assert "public.keep_me" in snapshot(source.pg, result["previous"])["rows"]
