"""Typed settings for the systems Slipway talks to, as plain models without Prefect.

The blocks in this package extend them (adding Prefect's storage and UI); the code in
`tasks/` takes these typed settings, whichever way they were configured.
"""

from __future__ import annotations

import functools
import os
import threading
from datetime import datetime
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import quote, unquote, urlsplit

from pydantic import BaseModel, Field, SecretStr

from blocks.errors import ConfigError

# boto3 is imported where a client is made: checking the configuration does without it.
if TYPE_CHECKING:
    import boto3
    from botocore.credentials import Credentials
    from mypy_boto3_s3 import S3Client


class PostgresSettings(BaseModel):
    """Connection settings for one PostgreSQL database; the password is a secret."""

    host: str = Field(default="localhost", description="Server host name or address.")
    port: int = Field(default=5432, description="Server port.")
    database: str = Field(description="Database name.")
    user: str = Field(default="postgres", description="Role to connect as.")
    password: SecretStr | None = Field(default=None, description="Role password.")
    sslmode: str | None = Field(
        default=None, description="libpq sslmode (require, verify-full...)."
    )

    @classmethod
    def from_url(cls, url: str) -> Self:
        """Parse `postgresql://user[:password]@host[:port]/database[?sslmode=...]`."""
        parts = urlsplit(url)
        if parts.scheme not in {"postgres", "postgresql"} or not parts.path.strip("/"):
            raise ConfigError(
                "database URL must look like postgresql://user@host:5432/dbname "
                "(put the password in PGPASSWORD or the block, not on the command line)"
            )
        query = dict(q.split("=", 1) for q in parts.query.split("&") if "=" in q)
        password = unquote(parts.password) if parts.password else os.environ.get("PGPASSWORD")
        return cls(
            host=parts.hostname or "localhost",
            port=parts.port or 5432,
            database=unquote(parts.path.strip("/")),
            user=unquote(parts.username)
            if parts.username
            else os.environ.get("PGUSER", "postgres"),
            password=SecretStr(password) if password else None,
            sslmode=query.get("sslmode"),
        )

    @classmethod
    def from_env(cls) -> Self:
        url = os.environ.get("DATABASE_URL")
        if not url:
            raise ConfigError("no database configured: set DATABASE_URL or pass a block name")
        return cls.from_url(url)

    def with_database(self, database: str) -> Self:
        """The same server and credentials, another database."""
        return self.model_copy(update={"database": database})

    def conninfo(self) -> dict[str, Any]:
        """Keyword arguments for `psycopg.connect` (password included; never log these)."""
        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "dbname": self.database,
            "user": self.user,
            "connect_timeout": 10,
            "application_name": "slipway",
        }
        if self.password is not None:
            kwargs["password"] = self.password.get_secret_value()
        if self.sslmode:
            kwargs["sslmode"] = self.sslmode
        return kwargs

    def libpq_env(self) -> dict[str, str]:
        """Environment for pg_dump/pg_restore: the password goes here, never into argv."""
        env = {
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": self.user,
            "PGDATABASE": self.database,
            "PGAPPNAME": "slipway",
            "PGCONNECT_TIMEOUT": "10",
        }
        if self.password is not None:
            env["PGPASSWORD"] = self.password.get_secret_value()
        if self.sslmode:
            env["PGSSLMODE"] = self.sslmode
        return env

    def display(self) -> str:
        """Where this database is, safe to log."""
        return f"postgresql://{quote(self.user)}@{self.host}:{self.port}/{quote(self.database)}"


class StorageSettings(BaseModel):
    """An S3-compatible bucket and prefix with its own endpoint and credentials.

    Without keys, boto3's default chain applies (environment, profile, instance role).
    """

    bucket: str = Field(description="Bucket name.")
    prefix: str = Field(
        default="", description="Key prefix inside the bucket, e.g. 'backups/prod'."
    )
    endpoint_url: str | None = Field(default=None, description="S3 endpoint (MinIO: its URL).")
    region: str | None = Field(default=None, description="Region (AWS); MinIO accepts any.")
    access_key_id: str | None = Field(default=None, description="Access key id.")
    secret_access_key: SecretStr | None = Field(default=None, description="Secret access key.")
    encryption_recipients: list[str] = Field(
        default_factory=list,
        description="age recipients (age1...) that backups and snapshots are encrypted to; "
        "empty: SLIPWAY_BACKUP_RECIPIENTS, else no encryption. Public keys only.",
    )
    encryption_identity: SecretStr | None = Field(
        default=None,
        description="age identities (AGE-SECRET-KEY-1..., one a line, # comments) that "
        "restores and drills decrypt with, beside SLIPWAY_BACKUP_IDENTITY_FILE's.",
    )

    @classmethod
    def from_url(cls, url: str, env_prefix: str = "AWS_") -> Self:
        """`s3://bucket/prefix`, endpoint and credentials from the environment.

        `env_prefix` "AWS_" reads the AWS SDK's variables; "SLIPWAY_SOURCE_" reads
        SLIPWAY_SOURCE_ENDPOINT_URL, _ACCESS_KEY_ID, _SECRET_ACCESS_KEY and _REGION (the
        app's MinIO), each falling back to its AWS_ counterpart when unset.
        """
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ConfigError(f"S3 URL {url!r} must look like s3://bucket/prefix")

        def var(*names: str) -> str | None:
            prefixes = [env_prefix] if env_prefix == "AWS_" else [env_prefix, "AWS_"]
            for prefix in prefixes:
                for name in names:
                    if value := os.environ.get(prefix + name):
                        return value
            return None

        secret = var("SECRET_ACCESS_KEY")
        return cls(
            bucket=parts.netloc,
            prefix=parts.path.strip("/"),
            endpoint_url=var("ENDPOINT_URL_S3", "ENDPOINT_URL"),
            region=var("REGION", "DEFAULT_REGION"),
            access_key_id=var("ACCESS_KEY_ID"),
            secret_access_key=SecretStr(secret) if secret else None,
        )

    def at(self, url: str) -> Self:
        """The same endpoint and credentials, another `s3://bucket/prefix`."""
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ConfigError(f"S3 URL {url!r} must look like s3://bucket/prefix")
        return self.model_copy(update={"bucket": parts.netloc, "prefix": parts.path.strip("/")})

    def same_endpoint(self, other: StorageSettings) -> bool:
        """Whether a server-side copy between the two can work (same server, same keys)."""
        return (self.endpoint_url or "", self.access_key_id or "", self.region or "") == (
            other.endpoint_url or "",
            other.access_key_id or "",
            other.region or "",
        )

    @classmethod
    def from_env(cls) -> Self:
        url = os.environ.get("SLIPWAY_BACKUP_URL")
        if not url:
            raise ConfigError(
                "no backup store configured: set SLIPWAY_BACKUP_URL=s3://bucket/prefix "
                "or pass a block name"
            )
        return cls.from_url(url)

    def key(self, *parts: str) -> str:
        """A key under this store's prefix."""
        return "/".join(p.strip("/") for p in (self.prefix, *parts) if p.strip("/"))

    def url(self, *parts: str) -> str:
        return f"s3://{self.bucket}/{self.key(*parts)}"

    def client(self, max_connections: int = 16) -> S3Client:
        """A boto3 client for this endpoint; `max_connections` bounds concurrent requests."""
        from botocore.config import Config

        secret = self.secret_access_key.get_secret_value() if self.secret_access_key else None
        config = Config(
            s3={
                "addressing_style": "path" if self.endpoint_url else "auto",
                # Parts carry a CRC32 and the whole dump a sha256 of our own: a second
                # sha256 pass for SigV4 (botocore's default over plain HTTP) adds nothing.
                "payload_signing_enabled": False,
            },
            retries={"mode": "standard", "max_attempts": 5},
            connect_timeout=10,
            read_timeout=120,
            max_pool_connections=max_connections,
        )
        # With explicit keys one shared session serves (it has loaded the S3 model once);
        # without, a fresh one resolves the default chain as it is now.
        session = _shared_session() if self.access_key_id else _new_session()
        with _SESSION_LOCK:  # sessions are not thread-safe; their clients are
            return session.client(
                "s3",
                endpoint_url=self.endpoint_url,
                region_name=self.region or "us-east-1",
                aws_access_key_id=self.access_key_id,
                aws_secret_access_key=secret,
                config=config,
            )

    def credentials(self) -> Credentials:
        """The keys requests are signed with: this store's, else boto3's default chain."""
        from botocore.credentials import Credentials

        if self.access_key_id and self.secret_access_key:
            return Credentials(self.access_key_id, self.secret_access_key.get_secret_value())
        found = None if self.access_key_id else _new_session().get_credentials()
        if found is None:
            raise ConfigError(f"no S3 credentials for s3://{self.bucket}")
        return found


_SESSION_LOCK = threading.Lock()


def _new_session() -> boto3.session.Session:
    import boto3
    import botocore.session

    core = botocore.session.get_session()
    # botocore parses each listed object's timestamp with dateutil: most of a listing's
    # CPU. S3's ISO 8601 timestamps need no such generality.
    core.get_component("response_parser_factory").set_parser_defaults(
        timestamp_parser=_parse_timestamp
    )
    return boto3.session.Session(botocore_session=core)


@functools.cache
def _shared_session() -> boto3.session.Session:
    return _new_session()


def _parse_timestamp(value: str) -> datetime:
    """S3's `2026-11-22T00:59:01.000Z` directly; anything else the way botocore does."""
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        from botocore.utils import parse_timestamp

        parsed: datetime = parse_timestamp(value)
        return parsed
