"""A wrong configuration is refused before Prefect is imported, with all its problems at once.

Each command runs as a process under `python -X importtime`: its stderr lists every module
imported, so "Prefect was never imported" is read from there. No service is needed: nothing
is contacted.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.commands import run as run_command

REPO = Path(__file__).resolve().parent.parent
LEAK = "hunter2-leak"
FOUR_PROBLEMS = """
name: Prod Env
database: {url: "mysql://app@db:5432/app", password: "hunter2-leak"}
store: {url: "s3://backups/prod", secret_access_key: "${UNSET_SLIPWAY_TEST_VAR}"}
target: {project_directory: /srv/app, services: [api]}
"""


def run(args: list[str], env_vars: dict[str, str], home: Path) -> tuple[int, list[str], set[str]]:
    """Exit status, stderr lines that are not import timings, and the modules imported."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "SLIPWAY_", "DATABASE_URL", "PG", "PREFECT_"))
    }
    env = {
        **base,
        "HOME": str(home),  # no ~/.aws profile
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_CONFIG_FILE": "/dev/null",
        "PREFECT_HOME": str(home / "prefect"),
        **env_vars,
    }
    proc = run_command([sys.executable, "-X", "importtime", "-m", "deployments.cli", *args], env)
    modules = set()
    lines = []
    for line in proc.stderr.splitlines():
        if line.startswith("import time:"):
            modules.add(line.rsplit("|", 1)[-1].strip())
        else:
            lines.append(line)
    return proc.returncode, lines, modules


NO_STORE = "SLIPWAY_BACKUP_URL"
CASES = [
    pytest.param(["backup"], {}, [NO_STORE, "DATABASE_URL"], id="backup-nothing-set"),
    pytest.param(
        ["backup"],
        {
            "DATABASE_URL": f"postgresql://app:{LEAK}@db:port/app",
            "SLIPWAY_BACKUP_URL": "s3://backups/prod",
            "AWS_ENDPOINT_URL_S3": "minio:9000",
            "AWS_ACCESS_KEY_ID": "key-id",
        },
        ["DATABASE_URL", "AWS_ENDPOINT_URL_S3", "AWS_SECRET_ACCESS_KEY"],
        id="backup-three-problems",
    ),
    pytest.param(
        ["backups", "list"],
        {"DATABASE_URL": "mysql://app@db/app", "SLIPWAY_BACKUP_URL": "s3:/backups"},
        ["DATABASE_URL", "SLIPWAY_BACKUP_URL 's3:/backups'"],
        id="list",
    ),
    pytest.param(["verify", "latest"], {}, [NO_STORE, "DATABASE_URL"], id="verify"),
    pytest.param(["prune", "--dry-run"], {}, [NO_STORE, "DATABASE_URL"], id="prune"),
    pytest.param(
        ["restore", "latest", "--target-database-url", f"postgresql://app:{LEAK}@db/app"],
        {"DATABASE_URL": "mysql://app@db/app"},  # names the source database by default
        ["--target-database-url holds a password", "DATABASE_URL", NO_STORE],
        id="restore",
    ),
    pytest.param(
        ["mirror", "s3:/app-files", "s3://backups/files"],
        {"AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9"},
        ["'s3:/app-files' is a malformed S3 URL", "no S3 credentials for s3://backups"],
        id="mirror",
    ),
    pytest.param(
        ["snapshot", "/nonexistent/app-files"],
        {},
        ["'/nonexistent/app-files' is not a directory", NO_STORE],
        id="snapshot",
    ),
    pytest.param(
        ["restore-files", "uploads@latest", "ftp://files/x"],
        {"SLIPWAY_SOURCE_ACCESS_KEY_ID": "app-key"},
        [NO_STORE, "'ftp://files/x' is neither s3://bucket/prefix nor a local directory"],
        id="restore-files",
    ),
    pytest.param(
        ["restore-files", "s3://mirror/uploads", "s3://app/uploads"],
        {
            "SLIPWAY_SOURCE_ENDPOINT_URL": "http://127.0.0.1:9",
            "SLIPWAY_SOURCE_ACCESS_KEY_ID": "app-key",
            "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9",
        },
        [
            "no S3 credentials for s3://mirror",
            "SLIPWAY_SOURCE_ACCESS_KEY_ID is set without SLIPWAY_SOURCE_SECRET_ACCESS_KEY (or AWS_",
        ],
        id="restore-files-credentials",
    ),
]


@pytest.mark.parametrize(("args", "env_vars", "needles"), CASES)
def test_all_problems_at_once_without_prefect(
    args: list[str], env_vars: dict[str, str], needles: list[str], tmp_path: Path
) -> None:
    status, lines, modules = run(args, env_vars, tmp_path)
    assert status == 1, lines
    assert len(lines) == 1, lines
    line = lines[0]
    assert line.startswith("error: "), line
    count = len(needles)
    if count > 1:
        assert f"the configuration has {count} problems: " in line, line
        assert line.endswith(": fix them and run again"), line
    for needle in needles:
        assert needle in line, line
    assert LEAK not in line
    assert "prefect" not in {m.split(".")[0] for m in modules}, sorted(
        m for m in modules if m.startswith("prefect")
    )
    assert not (tmp_path / "prefect").exists()  # nothing written either


def test_a_named_block_replaces_its_variables(tmp_path: Path) -> None:
    """With --database-block, DATABASE_URL is the block's business: only the rest is checked."""
    status, lines, modules = run(
        ["backup", "--database-block", "production-database"],
        {"SLIPWAY_BACKUP_URL": "s3:/x"},
        tmp_path,
    )
    assert status == 1
    assert lines == ["error: SLIPWAY_BACKUP_URL 's3:/x' must look like s3://bucket/prefix"]
    assert not any(m.startswith("prefect") for m in modules)


def test_environment_file_problems_at_once(tmp_path: Path) -> None:
    path = tmp_path / "production.yaml"
    path.write_text(FOUR_PROBLEMS)
    status, lines, modules = run(["env", "apply", str(path)], {}, tmp_path)
    assert status == 1, lines
    assert len(lines) == 1, lines
    line = lines[0]
    assert f"{path} has 4 problems: " in line, line
    for needle in (
        "database.password in",
        "${UNSET_SLIPWAY_TEST_VAR}, which is not set",
        "environment name 'Prod Env'",
        "database.url in",
    ):
        assert needle in line, line
    assert LEAK not in line
    assert not any(m.startswith("prefect") for m in modules)
