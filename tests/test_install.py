"""The install story of an operations host: `make install` (a wheel, `uv tool install`, the
versions uv.lock pins) gives a `slipway` that works with nothing of the repository.

The tool is installed into a throwaway tool directory and run from outside the repository,
with no virtualenv, PYTHONPATH or repository path in its environment: help, version, and a
real backup listed afterwards (PostgreSQL, S3 and the Prefect API through the installed
dependencies and the machine's pg_dump).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_backup_restore import Env
from tests.test_backup_restore import env as env  # the fixture, reused

pytestmark = [pytest.mark.postgres, pytest.mark.s3, pytest.mark.prefect]

REPO = Path(__file__).resolve().parent.parent


def outside_repo(env: dict[str, str]) -> dict[str, str]:
    """`env` without anything that would let a command find the repository or its .venv."""
    clean = {k: v for k, v in env.items() if k not in {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"}}
    path = [p for p in env.get("PATH", "/usr/bin:/bin").split(os.pathsep) if str(REPO) not in p]
    clean["PATH"] = os.pathsep.join(path)
    return clean


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The `slipway` executable `make install` put into a throwaway tool directory."""
    if not shutil.which("make"):
        pytest.skip("make not found: apt-get install make")
    root = tmp_path_factory.mktemp("uv-tools")
    env = outside_repo(dict(os.environ))
    env |= {"UV_TOOL_DIR": str(root / "tools"), "UV_TOOL_BIN_DIR": str(root / "bin")}
    proc = subprocess.run(
        ["make", "--no-print-directory", "-C", str(REPO), "install"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "make install: installs the slipway and prefect commands" in proc.stdout  # says it first
    yield root / "bin" / "slipway"
    shutil.rmtree(root, ignore_errors=True)


def run(
    slipway: Path, *args: str, env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(slipway), *args],
        env=outside_repo(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_installed_tool_is_its_own(installed: Path, tmp_path: Path) -> None:
    """Help and version work, and the code runs from the tool's environment, not the repo."""
    assert installed.is_file()
    base = dict(os.environ)
    help_out = run(installed, "--help", env=base, cwd=tmp_path)
    assert help_out.returncode == 0, help_out.stderr
    assert "backup" in help_out.stdout
    assert "release" in help_out.stdout
    version = run(installed, "version", env=base, cwd=tmp_path)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == project["version"]
    # Prefect's own command comes along, for `prefect server start` and the worker.
    prefect = run(installed.parent / "prefect", "version", env=base, cwd=tmp_path)
    assert prefect.returncode == 0, prefect.stderr
    # The tool's own interpreter (uv's layout: <tool dir>/slipway/bin) imports from there.
    interpreter = installed.parent.parent / "tools" / "slipway" / "bin" / "python"
    where = subprocess.run(
        [
            str(interpreter),
            "-c",
            "import deployments.cli, flows.backup; print(flows.backup.__file__)",
        ],
        env=outside_repo(base),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    module = Path(where.stdout.strip())
    assert installed.parent.parent in module.parents, module
    assert REPO not in module.parents


def test_installed_tool_backs_up_and_lists(installed: Path, env: Env, tmp_path: Path) -> None:
    """A real backup through the installed tool, then listed by it."""
    backup = run(installed, "backup", env=env.vars, cwd=tmp_path)
    assert backup.returncode == 0, backup.stdout + backup.stderr
    backup_id = backup.stdout.split()[0]
    listed = run(installed, "backups", "list", env=env.vars, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert backup_id in listed.stdout
