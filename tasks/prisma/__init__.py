"""Prisma migrations (`migrate status`, `deploy`, `resolve`): natively, or through the Prisma CLI.

`engine` applies and compares migrations as Prisma's schema engine does (its docstring says
how), `resolve` marks them, `table` keeps Prisma's bookkeeping table and lock, `sql_lexer`
finds statements that cannot share a file, and `cli_runner` runs `npx prisma` instead.
"""

from tasks.prisma.cli_runner import database_url, prisma_cli_deploy
from tasks.prisma.engine import deploy_migrations, migration_status
from tasks.prisma.models import (
    DeployReport,
    MigrationFailed,
    MigrationRow,
    MigrationStatus,
    checksum,
    checksum_matches,
    database_error_line,
    schema_from_url,
)
from tasks.prisma.resolve import resolve_migration
from tasks.prisma.sql_lexer import script_problem
from tasks.prisma.table import LOCK_ID, LOCK_TIMEOUT_SECONDS, TABLE

__all__ = [
    "LOCK_ID",
    "LOCK_TIMEOUT_SECONDS",
    "TABLE",
    "DeployReport",
    "MigrationFailed",
    "MigrationRow",
    "MigrationStatus",
    "checksum",
    "checksum_matches",
    "database_error_line",
    "database_url",
    "deploy_migrations",
    "migration_status",
    "prisma_cli_deploy",
    "resolve_migration",
    "schema_from_url",
    "script_problem",
]
