"""One release or rollback per environment at a time: a PostgreSQL advisory lock.

The lock is a session-level advisory lock held on the environment's database server (in
its `postgres` maintenance database, so restoring and renaming the app's database is not
blocked by it). It lives exactly as long as the holder's connection: a release process
that dies releases it with its connection, and server-side TCP keepalives free it within
about a minute when the machine itself vanished. The holder and its age are visible in
`pg_stat_activity` (`slipway status`); `slipway unlock` ends a stuck holder's session.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import psycopg
from pydantic import BaseModel

from blocks.errors import SlipwayError
from blocks.input_checks import check_environment_name
from blocks.settings import PostgresSettings
from tasks.postgres.connection import admin_database, connect, connection_error

# Advisory locks take two int4 keys: Slipway's namespace, then the environment's.
NAMESPACE = 0x511D
HOLDER_PREFIX = "slipway-lock"
KEEPALIVES = "-c tcp_keepalives_idle=20 -c tcp_keepalives_interval=10 -c tcp_keepalives_count=3"


class LockHolder(BaseModel):
    pid: int
    holder: str
    since: datetime
    age_seconds: float
    client: str | None


class LockHeld(SlipwayError):
    """Another release or rollback holds the environment."""


def _key(environment: str) -> int:
    # Only a block's own name: any other spelling of it would be another lock.
    return zlib.crc32(check_environment_name(environment).encode()) & 0x7FFFFFFF


def _application_name(environment: str, holder: str) -> str:
    return f"{HOLDER_PREFIX} {environment}: {holder}"[:63]  # PostgreSQL keeps 63 bytes


def lock_holder(db: PostgresSettings, environment: str) -> LockHolder | None:
    """Who holds the environment's lock, and since when; None when it is free."""
    with connect(admin_database(db), autocommit=True) as conn:
        row = conn.execute(
            "SELECT a.pid, a.application_name, a.backend_start, "
            "extract(epoch FROM now() - a.backend_start), host(a.client_addr) "
            "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s "
            "AND l.objsubid = 2 AND l.database = (SELECT oid FROM pg_database "
            "WHERE datname = current_database())",
            (NAMESPACE, _key(environment)),
        ).fetchone()
    if row is None:
        return None
    return LockHolder(
        pid=row[0],
        holder=str(row[1]).removeprefix(f"{HOLDER_PREFIX} {environment}: "),
        since=row[2],
        age_seconds=float(row[3]),
        client=row[4],
    )


def run_label() -> str:
    """The current flow run's name, to tell holders apart; `cli` outside a run."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    return str(context.flow_run.name) if context and context.flow_run else "cli"


def describe(holder: LockHolder) -> str:
    minutes = int(holder.age_seconds // 60)
    age = f"{minutes} min" if minutes else f"{int(holder.age_seconds)} s"
    where = f" from {holder.client}" if holder.client else ""
    return f"{holder.holder!r} (server pid {holder.pid}{where}, for {age})"


@contextmanager
def deploy_lock(
    db: PostgresSettings, environment: str, holder: str, wait_seconds: float = 0
) -> Iterator[None]:
    """Hold the environment for one release or rollback; refuse (or wait) when it is taken."""
    settings = admin_database(db)
    info = settings.conninfo() | {
        "application_name": _application_name(environment, holder),
        "options": KEEPALIVES,
    }
    try:
        conn = psycopg.connect(**info, autocommit=True)
    except psycopg.OperationalError as exc:
        raise connection_error(exc, db) from exc
    try:
        deadline = time.monotonic() + wait_seconds
        while True:
            got = conn.execute(
                "SELECT pg_try_advisory_lock(%s, %s)", (NAMESPACE, _key(environment))
            ).fetchone()
            if got and got[0]:
                break
            if time.monotonic() >= deadline:
                current = lock_holder(db, environment)
                who = describe(current) if current else "another session"
                raise LockHeld(
                    f"environment {environment!r} is busy: {who} holds it; wait for it to end, "
                    f"or if that process is gone for good run `slipway unlock --env {environment}`"
                )
            time.sleep(1.0)
        yield
    finally:
        conn.close()  # the lock goes with the session


def break_lock(db: PostgresSettings, environment: str) -> LockHolder | None:
    """End the session holding the environment's lock (a stale holder); return who it was."""
    current = lock_holder(db, environment)
    if current is None:
        return None
    with connect(admin_database(db), autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (current.pid,))
    return current
