"""Prisma CLI mode: `npx prisma migrate deploy`, with the database URL in its environment only."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from urllib.parse import quote, urlencode

from blocks.errors import ConfigError, SlipwayError
from blocks.settings import PostgresSettings


def prisma_cli_deploy(
    db: PostgresSettings, schema_path: Path, app_dir: Path, *, schema: str | None = None
) -> str:
    """Run `npx prisma migrate deploy --schema SCHEMA_PATH` in `app_dir`; its output.

    DATABASE_URL (with the password) reaches Prisma through the environment only; `npx --no`
    never downloads Prisma: the app must have it in its node_modules.
    """
    npx = shutil.which("npx")
    if npx is None:
        raise SlipwayError(
            "npx not found on the PATH: install Node.js and npm, or use the native mode "
            "(no Node needed)"
        )
    if shutil.which("node") is None:
        raise SlipwayError("node not found on the PATH: install Node.js, or use the native mode")
    if not app_dir.is_dir():
        raise ConfigError(f"app directory {app_dir} not found: pass the app's checkout")
    if not (app_dir / schema_path).is_file():
        raise ConfigError(
            f"Prisma schema {schema_path} not found in {app_dir}: pass the app's schema.prisma "
            "(e.g. prisma/schema.prisma)"
        )
    env = {
        **os.environ,
        "DATABASE_URL": database_url(db, schema),
        "PRISMA_HIDE_UPDATE_MESSAGE": "1",
    }
    proc = subprocess.run(
        [npx, "--no", "prisma", "migrate", "deploy", "--schema", str(schema_path)],
        cwd=app_dir,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    output = (proc.stdout + proc.stderr).strip()
    if db.password is not None:
        secret = db.password.get_secret_value()
        for form in (secret, quote(secret, safe="")):
            output = output.replace(form, "***")
    if proc.returncode != 0:
        tail = " | ".join([line.strip() for line in output.splitlines() if line.strip()][-3:])
        raise SlipwayError(
            f"prisma migrate deploy failed (exit {proc.returncode}): {tail or 'no output'}"
        )
    return output


def database_url(db: PostgresSettings, schema: str | None = None) -> str:
    """A Prisma DATABASE_URL for `db`, password included: for a child's environment only."""
    auth = quote(db.user, safe="")
    if db.password is not None:
        auth += ":" + quote(db.password.get_secret_value(), safe="")
    host = f"[{db.host}]" if ":" in db.host else db.host
    query = urlencode({k: v for k, v in (("schema", schema), ("sslmode", db.sslmode)) if v})
    return f"postgresql://{auth}@{host}:{db.port}/{quote(db.database, safe='')}" + (
        f"?{query}" if query else ""
    )
