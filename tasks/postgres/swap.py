"""The databases of a restore beside its target: their names, their locks, the swap.

A restore fills `<target>_slipway_new_<hex>`, then swaps names: the target becomes
`<target>_slipway_old_<hex>`, which is always kept, and the new one takes its name.

Locks, all PostgreSQL advisory locks taken on the `postgres` maintenance connection, so
they end with the restore's session even when its process is killed:
- each side database's name, for the restore's whole life: a side database whose lock
  can be taken belongs to a restore that died, and may be dropped;
- the target's name, while a restore checks and swaps it, or sweeps its leftovers.

The swap is one step: connections to the target are refused (`ALLOW_CONNECTIONS false`),
its sessions ended, whether it is empty is checked again through a session opened before,
then both renames commit in one transaction. Were the process killed in between, the side
database's comment says that the target's connections were blocked, and the next sweep
allows them again.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import time
from collections.abc import Iterator

import psycopg
from psycopg import errors, sql

from blocks.errors import SlipwayError
from blocks.settings import PostgresSettings
from tasks.postgres import connection as pg

MAX_NAME_BYTES = 63  # PostgreSQL's identifier limit (NAMEDATALEN - 1)
SIDE = "_slipway_{tag}_"
HEX = 6
SESSIONS_END_SECONDS = 30
SWAP_LOCK_TIMEOUT = "60s"
BLOCKED = "slipway: connections to {target} are blocked for a swap"


def _prefix(target: str, tag: str) -> str:
    """The target's name cut to leave room for the suffix: by bytes, at a character edge."""
    room = MAX_NAME_BYTES - len(SIDE.format(tag=tag).encode()) - HEX
    return target.encode()[:room].decode(errors="ignore")


def side_name(target: str, tag: str) -> str:
    """`<target>_slipway_<tag>_<hex>`, at most 63 bytes, the random tail kept whole."""
    return _prefix(target, tag) + SIDE.format(tag=tag) + secrets.token_hex(HEX // 2)


def _is_side_of(name: str, target: str, tag: str) -> bool:
    pattern = re.escape(_prefix(target, tag) + SIDE.format(tag=tag)) + f"[0-9a-f]{{{HEX}}}"
    return re.fullmatch(pattern, name) is not None


def _lock_key(kind: str, name: str) -> tuple[str]:
    return (f"slipway restore {kind} {name}",)


def hold_side_name(admin: psycopg.Connection, name: str) -> bool:
    """Take the side database's lock for this session's life; False if someone holds it."""
    row = admin.execute(
        "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", _lock_key("side", name)
    ).fetchone()
    return bool(row and row[0])


def release_side_name(admin: psycopg.Connection, name: str) -> None:
    admin.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", _lock_key("side", name))


@contextlib.contextmanager
def target_lock(admin: psycopg.Connection, target: str) -> Iterator[None]:
    """The target's lock: one restore at a time checks, swaps or sweeps it."""
    try:
        admin.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(SWAP_LOCK_TIMEOUT)))
        admin.execute(
            "SELECT pg_advisory_lock(hashtextextended(%s, 0))", _lock_key("target", target)
        )
    except errors.LockNotAvailable as exc:
        raise SlipwayError(
            f"another restore into {target!r} has been swapping it for {SWAP_LOCK_TIMEOUT}: "
            "wait for it to end, then run this one again"
        ) from exc
    finally:
        admin.execute("RESET lock_timeout")
    try:
        yield
    finally:
        admin.execute(
            "SELECT pg_advisory_unlock(hashtextextended(%s, 0))", _lock_key("target", target)
        )


def sweep_side_databases(admin: psycopg.Connection, target: str) -> list[str]:
    """Drop the side databases of `target` left by restores that died; say what was done.

    Call under `target_lock`. A running restore holds its side database's lock: its
    database stays. Databases kept as `_slipway_old_` are never touched.
    """
    done = []
    rows = admin.execute(
        "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database "
        "WHERE datname LIKE %s ORDER BY 1",
        (r"%\_slipway\_new\_%",),
    ).fetchall()
    for name, comment in rows:
        if not _is_side_of(name, target, "new") or not hold_side_name(admin, name):
            continue
        try:
            if comment == BLOCKED.format(target=target) and _allow_connections(admin, target):
                done.append(f"connections to database {target!r} allowed again")
            pg.drop_database(admin, name)
            done.append(f"database {name!r} dropped")
        finally:
            release_side_name(admin, name)
    return done


def _allow_connections(admin: psycopg.Connection, name: str) -> bool:
    """Let connections into `name` again; True if they were blocked."""
    row = admin.execute(
        "SELECT datallowconn FROM pg_database WHERE datname = %s", (name,)
    ).fetchone()
    if row is None or row[0]:
        return False
    admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(sql.Identifier(name)))
    return True


def _comment(admin: psycopg.Connection, name: str, text: str | None) -> None:
    admin.execute(
        sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(name), sql.Literal(text))
    )


def _end_sessions(admin: psycopg.Connection, name: str, keep: int) -> None:
    """End every session on `name` but `keep`; new ones are refused already."""
    deadline = time.monotonic() + SESSIONS_END_SECONDS
    while True:
        pids = [
            pid
            for (pid,) in admin.execute(
                "SELECT pid FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid() AND pid <> %s",
                (name, keep),
            )
        ]
        if not pids:
            return
        if time.monotonic() > deadline:
            raise SlipwayError(
                f"{len(pids)} sessions on database {name!r} did not end: "
                "stop what holds them, then restore again"
            )
        admin.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (pids,))
        time.sleep(0.05)


def _rename(admin: psycopg.Connection, old: str, new: str) -> None:
    admin.execute(
        sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new))
    )


def refuse_if_not_empty(target: PostgresSettings, yes: bool) -> None:
    """Refuse early (before any download) a target that holds tables, without --yes."""
    if not yes and pg.database_has_tables(target):
        raise _not_empty(target.database)


def _not_empty(name: str) -> SlipwayError:
    return SlipwayError(
        f"target database {name!r} is not empty: pass --yes to replace it "
        "(the current one is kept under another name)"
    )


def swap_in(admin: psycopg.Connection, target: PostgresSettings, new: str, yes: bool) -> str | None:
    """Put database `new` in the target's place; returns the name the previous one is kept
    under (None if there was none). Without `yes`, a target holding tables is refused."""
    name = target.database
    with target_lock(admin, name):
        if not pg.database_exists(admin, name):
            _rename(admin, new, name)
            return None
        previous = side_name(name, "old")
        checker = pg.connect(target)  # the one session left on the target: ours
        blocked = False
        try:
            _comment(admin, new, BLOCKED.format(target=name))
            admin.execute(
                sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(name))
            )
            blocked = True
            _end_sessions(admin, name, checker.info.backend_pid)
            holds_tables = pg.has_tables(checker)
            checker.close()
            if holds_tables and not yes:
                raise _not_empty(name)
            with admin.transaction():
                _rename(admin, name, previous)
                _rename(admin, new, name)
                _comment(admin, name, None)
                admin.execute(
                    sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(
                        sql.Identifier(previous)
                    )
                )
            blocked = False
        finally:
            checker.close()
            if blocked:
                _allow_connections(admin, name)
                _comment(admin, new, None)
        return previous
