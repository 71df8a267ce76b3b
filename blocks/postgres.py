"""The PostgreSQL database Slipway backs up, migrates and restores."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from pydantic import Field, SecretStr

from blocks.base import SlipwayBlock
from blocks.errors import ConfigError


class PostgresDatabase(SlipwayBlock):
    """Connection settings for one PostgreSQL database; the password is a secret."""

    _block_type_name = "Slipway PostgreSQL Database"
    _block_type_slug = "slipway-postgres-database"
    _description = "A PostgreSQL database Slipway backs up, migrates and restores."

    host: str = Field(default="localhost", description="Server host name or address.")
    port: int = Field(default=5432, description="Server port.")
    database: str = Field(description="Database name.")
    user: str = Field(default="postgres", description="Role to connect as.")
    password: SecretStr | None = Field(default=None, description="Role password.")
    sslmode: str | None = Field(
        default=None, description="libpq sslmode (require, verify-full...)."
    )

    @classmethod
    def from_url(cls, url: str) -> PostgresDatabase:
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
    def from_env(cls) -> PostgresDatabase:
        url = os.environ.get("DATABASE_URL")
        if not url:
            raise ConfigError("no database configured: set DATABASE_URL or pass a block name")
        return cls.from_url(url)

    def with_database(self, database: str) -> PostgresDatabase:
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
