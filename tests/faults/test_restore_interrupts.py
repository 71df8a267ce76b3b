"""A restore killed, stopped or out of disk: what it says, and what it leaves behind.

`slipway restore` runs as a command; the test holds it in the middle of its data load by
locking a table of its side database (its `pg_restore` waits for the lock), so it is
interrupted at a known point, never at a guessed moment.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from blocks.errors import SlipwayError
from blocks.settings import PostgresSettings
from tests.harness.postgres import PostgresInfo
from tests.harness.prefect_server import PrefectInfo
from tests.harness.s3 import S3Info
from tests.pg_fixtures import create_database, snapshot
from tests.test_backup_restore import REPO, SLIPWAY, _one_line_error, slipway
from tests.test_pg_restore import backup

pytestmark = [pytest.mark.postgres, pytest.mark.s3, pytest.mark.prefect]

# About 12 MiB of text that compresses poorly: the archive takes a while to arrive.
BIG = """
CREATE TABLE small (id int PRIMARY KEY, note text);
INSERT INTO small SELECT g, 'n' || g FROM generate_series(1, 100) g;
CREATE TABLE big (id int PRIMARY KEY, body text);
INSERT INTO big SELECT g, md5(g::text) || md5((g * 7)::text) || md5(random()::text)
    FROM generate_series(1, 120000) g;
"""
WAIT_SECONDS = 120  # an upper bound for things that do happen; never a measured time


@dataclass
class Setup:
    pg: PostgresInfo
    source: str
    backup_id: str
    vars: dict[str, str]
    tmp: Path

    def start_restore(self, target: str, *flags: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*SLIPWAY, *self.restore_args(target, *flags)],
            env=self.vars,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def restore(self, target: str, *flags: str) -> subprocess.CompletedProcess[str]:
        return slipway(*self.restore_args(target, *flags), env=self.vars)

    def restore_args(self, target: str, *flags: str) -> list[str]:
        """`slipway restore` of the backup into `target` on the same server."""
        return [
            "restore",
            self.backup_id,
            "--target-database-url",
            self.pg.url_without_password(target),
            "--source-database",
            self.source,
            *flags,
        ]


@pytest.fixture(scope="module")
def setup(
    postgres: PostgresInfo,
    s3: S3Info,
    prefect_server: PrefectInfo,
    tmp_path_factory: pytest.TempPathFactory,
) -> Setup:
    source = create_database(postgres, BIG)
    bucket = f"restores-{secrets.token_hex(4)}"
    s3.client().create_bucket(Bucket=bucket)
    tmp = tmp_path_factory.mktemp("restore-tmp")
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "PG", "DATABASE_URL", "SLIPWAY_"))
    }
    env = {
        **base,
        **s3.env(),
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_CONFIG_FILE": "/dev/null",
        "DATABASE_URL": postgres.url_without_password(source),
        "PGPASSWORD": postgres.password,
        "SLIPWAY_BACKUP_URL": f"s3://{bucket}/nightly",
        "PREFECT_API_URL": prefect_server.api_url,
        "TMPDIR": str(tmp),
    }
    out = slipway("backup", "--json", env=env)
    assert out.returncode == 0, out.stderr
    return Setup(postgres, source, json.loads(out.stdout)["id"], env, tmp)


def side_databases(pg: PostgresInfo, target: str) -> list[str]:
    with psycopg.connect(pg.url(), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s ORDER BY 1",
            (target + r"\_slipway\_new\_%",),
        ).fetchall()
    return [str(r[0]) for r in rows]


def loaders_of(database: str) -> list[int]:
    """The live pg_restore processes writing into `database`."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in {"Z", "X"} and f"--dbname={database}".encode() in argv:
            pids.append(int(proc.name))
    return pids


def until(condition: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def has_big_table(pg: PostgresInfo, database: str) -> bool:
    try:
        with psycopg.connect(pg.url(database)) as conn:
            row = conn.execute("SELECT to_regclass('public.big')").fetchone()
    except psycopg.OperationalError:
        return False
    return bool(row and row[0])


@contextlib.contextmanager
def held_in_its_load(
    setup: Setup, proc: subprocess.Popen[str], target: str
) -> Iterator[tuple[str, list[int]]]:
    """Wait for the restore's side database, and hold its data load: yields the side
    database's name and its loaders' pids, waiting for a lock on table `big`."""
    sides: list[str] = []

    def side_appeared() -> bool:
        assert proc.poll() is None, proc.communicate()
        sides[:] = side_databases(setup.pg, target)
        return bool(sides)

    until(side_appeared, "the restore never created its side database")
    side = sides[0]
    until(lambda: has_big_table(setup.pg, side), "the schema never arrived")
    holder = psycopg.connect(setup.pg.url(side))
    try:
        holder.execute("LOCK TABLE big IN ACCESS EXCLUSIVE MODE")
        # The data load starts once the whole archive is in: wait for its loaders.
        until(lambda: loaders_of(side) or proc.poll() is not None, "the data load never started")
        loaders = loaders_of(side)
        assert loaders, "the restore loaded its data before the test could hold it"
        yield side, loaders
    finally:
        holder.close()  # the restore may have ended this session already


def test_sigterm_says_why_and_leaves_nothing(setup: Setup) -> None:
    target = create_database(setup.pg, "CREATE TABLE keep (v int); INSERT INTO keep VALUES (1);")
    before = snapshot(setup.pg, target)
    proc = setup.start_restore(target, "--yes")
    with held_in_its_load(setup, proc, target):
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=WAIT_SECONDS)
    line = _one_line_error(
        subprocess.CompletedProcess(proc.args, proc.returncode, out, err), "SIGTERM", "unchanged"
    )
    assert "error: ;" not in line
    assert snapshot(setup.pg, target) == before
    assert side_databases(setup.pg, target) == []
    assert list(setup.tmp.glob("slipway-restore-*")) == []


def test_kill_9_leaves_no_loader_and_the_next_run_removes_only_abandoned_leftovers(
    setup: Setup,
) -> None:
    from tasks.postgres.scratch import ScratchDir
    from tasks.postgres.swap import hold_side_name, side_name

    target = f"killed_{secrets.token_hex(3)}"
    proc = setup.start_restore(target)
    with held_in_its_load(setup, proc, target) as (side, loaders):
        proc.kill()  # SIGKILL to slipway alone, not to its process group
        proc.communicate()
        # Its pg_restore processes die with it, though still waiting for the lock.
        until(
            lambda: not [p for p in loaders if p in loaders_of(side)], "pg_restore outlived slipway"
        )
    left = list(setup.tmp.glob("slipway-restore-*"))
    assert side_databases(setup.pg, target) == [side]
    assert len(left) == 1

    # A concurrent restore of the same target, still running: its leftovers-to-be stay.
    live_side = side_name(target, "new")
    admin = PostgresSettings.from_url(setup.pg.url())
    with psycopg.connect(**admin.conninfo(), autocommit=True) as live:
        assert hold_side_name(live, live_side)
        live.execute(f'CREATE DATABASE "{live_side}"')
        with ScratchDir(str(setup.tmp)) as live_dir:
            out = setup.restore(target, "--json")
            assert out.returncode == 0, out.stderr
            result = json.loads(out.stdout)
            said = " ".join(result["leftovers_removed"])
            assert side in said
            assert str(left[0]) in said
            assert "leftovers" in result["state"]
            assert Path(live_dir).is_dir()
            assert side_databases(setup.pg, target) == [live_side]
        live.execute(f'DROP DATABASE "{live_side}"')
    assert not left[0].exists()
    assert list(setup.tmp.glob("slipway-restore-*")) == []
    assert snapshot(setup.pg, target) == snapshot(setup.pg, setup.source)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, mounted for this test."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_during_the_download_says_so(
    postgres: PostgresInfo, s3: S3Info, tiny_disk: Path
) -> None:
    from tasks.postgres.restore import restore_from_store

    source = create_database(postgres, BIG)
    entry, server, bucket = backup(postgres, s3, source)
    assert entry.manifest.raw_bytes > 4 << 20
    target = f"full_{secrets.token_hex(3)}"
    with psycopg.connect(postgres.url(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{target}"')
    store = server.storage(bucket)
    with pytest.raises(SlipwayError) as err:
        restore_from_store(
            store.client(),
            store,
            entry,
            PostgresSettings.from_url(postgres.url(target)),
            tiny_disk,
            2,
        )
    message = str(err.value)
    assert "disk is full" in message
    assert str(tiny_disk) in message
    assert "too short" not in message
    assert "\n" not in message
