"""`slipway doctor`'s checks, one system each: read-only, except the store's test object.

Each returns its detail line, raises `Skipped`, or fails with a one-line `SlipwayError`.
Their own timeouts are shorter than doctor's deadline, so they usually end by themselves.
What they need is imported here, before they run side by side (Prefect's modules, which
only the notifiers need, are imported first by the command line for the same reason).
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import socket
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import boto3
import psycopg
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from blocks.errors import SlipwayError
from tasks.doctor.runner import Shared, Skipped
from tasks.postgres import connection as pg
from tasks.prisma import script_problem
from tasks.prisma.table import read_local
from tasks.rollout import open_target
from tasks.storage.s3 import storage_error

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from blocks.environment import MigrationSettings
    from blocks.notifiers import NotifierBlock
    from blocks.rollout import TargetSettings
    from blocks.settings import PostgresSettings, StorageSettings
    from tasks.rollout.base import LiveVersion, PreflightReport

CONNECT_TIMEOUT = 5  # seconds, PostgreSQL and S3
READ_TIMEOUT = 10  # seconds, S3
TEST_BODY = b"written by `slipway doctor`, deleted at once\n"


# -- the database ---------------------------------------------------------------------------


def server_version(db: PostgresSettings) -> tuple[str, int]:
    """The server's version and major version (one connection)."""
    try:
        with psycopg.connect(**{**db.conninfo(), "connect_timeout": CONNECT_TIMEOUT}) as conn:
            return pg.server_version(conn), pg.server_major(conn)
    except psycopg.Error as exc:
        raise pg.connection_error(exc, db) from exc


def check_database(db: PostgresSettings, server: Shared[tuple[str, int]]) -> str:
    version, _ = server.get()
    return f"{db.display()} answers: PostgreSQL {version}"


def check_pg_tools(server: Shared[tuple[str, int]] | None) -> str:
    """pg_dump and pg_restore found, and at least as new as the server when it answers."""
    major: int | None = None
    if server is not None:
        with contextlib.suppress(SlipwayError):
            major = server.get()[1]
    tools = [pg.pg_tool(name, major) for name in ("pg_dump", "pg_restore")]
    found = ", ".join(f"{tool.name} {pg.tool_major(tool)} ({tool})" for tool in tools)
    if major is None:
        why = "no database configured" if server is None else "the database did not answer"
        raise Skipped(f"{found}; not compared with the server: {why}")
    return f"{found}: at least the server's {major}"


# -- the backup store -----------------------------------------------------------------------


def _client(store: StorageSettings) -> S3Client:
    """A client for the store that gives up quickly: doctor reports, it does not insist."""
    secret = store.secret_access_key.get_secret_value() if store.secret_access_key else None
    client: S3Client = boto3.session.Session().client(
        "s3",
        endpoint_url=store.endpoint_url,
        region_name=store.region or "us-east-1",
        aws_access_key_id=store.access_key_id,
        aws_secret_access_key=secret,
        config=Config(
            s3={"addressing_style": "path" if store.endpoint_url else "auto"},
            retries={"mode": "standard", "max_attempts": 2},
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=READ_TIMEOUT,
        ),
    )
    return client


def _code(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "")) or "refused"
    return type(exc).__name__


def check_store(store: StorageSettings) -> str:
    """The bucket answers, and a test object under doctor/ can be written, read and deleted.

    The test object is deleted whatever failed after it was sent.
    """
    client = _client(store)
    where = store.url()
    try:
        client.head_bucket(Bucket=store.bucket)
    except (ClientError, BotoCoreError) as exc:
        raise storage_error(exc, store) from exc
    key = store.key("doctor", f"{socket.gethostname()}-{secrets.token_hex(6)}")
    try:
        try:
            client.put_object(Bucket=store.bucket, Key=key, Body=TEST_BODY)
        except (ClientError, BotoCoreError) as exc:
            raise SlipwayError(
                f"cannot write to {where} ({_code(exc)}): the key needs s3:PutObject there"
            ) from exc
        try:
            body = client.get_object(Bucket=store.bucket, Key=key)["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            raise SlipwayError(
                f"cannot read back from {where} ({_code(exc)}): the key needs s3:GetObject there"
            ) from exc
        if body != TEST_BODY:
            raise SlipwayError(f"{where} returned other bytes than written: check the server")
    except SlipwayError:
        # A write that failed half-way may still have stored it.
        with contextlib.suppress(ClientError, BotoCoreError):
            client.delete_object(Bucket=store.bucket, Key=key)
        raise
    try:
        client.delete_object(Bucket=store.bucket, Key=key)
    except (ClientError, BotoCoreError) as exc:
        raise SlipwayError(
            f"the test object stays at s3://{store.bucket}/{key} ({_code(exc)}): the key "
            "needs s3:DeleteObject there (prune needs it too); remove the object by hand"
        ) from exc
    endpoint = f" at {store.endpoint_url}" if store.endpoint_url else ""
    return f"{where}{endpoint}: bucket found; a test object written, read back and deleted"


# -- notifiers ------------------------------------------------------------------------------


def describe_notifier(notifier: NotifierBlock) -> str:
    """How the notifier delivers, without its secrets."""
    from blocks.notifiers import SlackNotifier, TelegramNotifier

    if isinstance(notifier, SlackNotifier):
        if notifier.webhook_url is not None:
            return f"webhook to {urlsplit(notifier.webhook_url.get_secret_value()).hostname}"
        return f"bot to {notifier.channel} at {urlsplit(notifier.base_url).hostname}"
    if isinstance(notifier, TelegramNotifier):
        chats = len(notifier.chat_ids)
        return f"bot to {chats} chat{'s' * (chats != 1)} at {urlsplit(notifier.api_url).hostname}"
    return type(notifier).__name__


def check_notifier(notifier: NotifierBlock, send_test: bool) -> str:
    """The notifier's configuration (read already); with `send_test`, a message really sent."""
    from blocks.notifiers import Notice

    what = describe_notifier(notifier)
    if not send_test:
        return f"{what}: configured (--send-test sends a test message)"
    notifier.send(
        Notice(
            level="info",
            title="Slipway doctor: test message",
            text=f"Sent by `slipway doctor --send-test` on {socket.gethostname()}: "
            "notifications reach this chat.",
        )
    )
    return f"{what}: test message sent"


# -- the rollout target ---------------------------------------------------------------------


def inspect_target(settings: TargetSettings) -> tuple[PreflightReport, LiveVersion]:
    """The target's preflight (no version: nothing pulled) and its live versions."""
    with open_target(settings) as target:
        return target.preflight(), target.live_versions()


def check_target(target: Shared[tuple[PreflightReport, LiveVersion]]) -> str:
    """Reachable and consistent: every service deployed at one version, or none yet."""
    report, live = target.get()
    seen = f"{report.target}: {'; '.join(report.checks)}"
    if not live.deployed:
        return f"{seen}; nothing deployed yet"
    absent = [s for s, versions in live.services.items() if not versions]
    if absent:
        raise SlipwayError(
            f"{report.target}: services {', '.join(absent)} are not deployed while others are "
            f"({live.describe()}): start them, or release a version to deploy all of them"
        )
    if live.version is None:
        raise SlipwayError(
            f"{report.target}: services run different versions ({live.describe()}): "
            "release one version to all of them"
        )
    return f"{seen}; live {live.version}"


# -- migrations -----------------------------------------------------------------------------


def _folder(settings: MigrationSettings, version: str | None) -> Path:
    """The migrations folder (as the release resolves it), `{version}` as given."""
    text = str(settings.directory)
    directory = Path(text.replace("{version}", version) if version else text)
    if settings.mode == "cli" and settings.app_directory and not directory.is_absolute():
        return settings.app_directory / directory
    return directory


def check_migrations(
    settings: MigrationSettings, target: Shared[tuple[PreflightReport, LiveVersion]] | None
) -> str:
    """The folder exists and every migration.sql is one PostgreSQL can run as a script.

    A folder per version (`{version}` in it) is checked for the live version.
    """
    if settings.mode == "none":
        raise Skipped("migrations mode none: the app has no migrations")
    version = None
    if "{version}" in str(settings.directory):
        try:
            version = target.get()[1].version if target is not None else None
        except SlipwayError as exc:
            raise Skipped(f"{settings.directory}: the live version is unknown ({exc})") from exc
        if version is None:
            raise Skipped(
                f"{settings.directory}: no single live version to check it for; a release "
                "checks its own version's folder"
            )
    folder = _folder(settings, version)
    notes = []
    if settings.mode == "cli":
        if not shutil.which("npx"):
            raise SlipwayError("migrations mode cli needs npx: install Node.js, or use native")
        if settings.schema_path is None or not settings.schema_path.is_file():
            raise SlipwayError(
                f"migrations mode cli: schema_path {settings.schema_path} is not a file: fix it"
            )
        notes.append("npx found")
    migrations = read_local(folder)
    problems = [f"{m.name}: {problem}" for m in migrations if (problem := script_problem(m.text()))]
    if problems:
        raise SlipwayError(f"{folder}: " + "; ".join(problems))
    latest = f", latest {migrations[-1].name}" if migrations else ""
    return f"{folder}: {len(migrations)} migrations{latest}, each runnable" + "".join(
        f"; {n}" for n in notes
    )
