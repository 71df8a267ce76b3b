"""The README's configuration reference cannot drift from the code.

It is generated from the settings models (`python -m deployments.reference`): these tests
fail when the README's copy is stale, when a key has no description, when the code reads
an environment variable the reference does not list, and when the README's example files
are no longer valid configuration.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from blocks.env_file import load_environment_file
from deployments import reference
from deployments.webhook import WebhookConfig

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
# Read by the code but no configuration of Slipway's.
NOT_SETTINGS = {"PATH", "HOME", "PYTHONPATH"}
READS = re.compile(
    r"""(?:environ\.get|getenv)\(\s*["']([A-Z][A-Z0-9_]*)["']"""
    r"""|environ\[\s*["']([A-Z][A-Z0-9_]*)["']\](?!\s*=[^=])"""  # a read, not an assignment
)
# Slipway's own variables are also read through constants: every such name counts.
OWN = re.compile(r"""["'](SLIPWAY_[A-Z0-9_]*[A-Z0-9])["']""")


def test_readme_reference_is_current() -> None:
    text = README.read_text()
    assert reference.updated(text) == text, (
        "the README's configuration reference is stale: run python -m deployments.reference"
    )
    assert reference.main(["--check"]) == 0


@pytest.mark.parametrize("root", [r[2] for r in reference.roots()], ids=lambda m: m.__name__)
def test_every_key_is_described(root: type) -> None:
    assert reference.missing_descriptions(root) == []


def test_every_variable_the_code_reads_is_listed() -> None:
    read = {
        name
        for folder in ("blocks", "deployments", "flows", "tasks")
        for path in (REPO / folder).rglob("*.py")
        for pattern in (READS, OWN)
        for match in pattern.finditer(path.read_text())
        for name in match.groups()
        if name
    }
    unlisted = sorted(read - reference.variable_names() - NOT_SETTINGS)
    assert unlisted == [], f"add these to deployments/reference.py VARIABLES: {unlisted}"


def _example(marker: str) -> str:
    """The README's ```yaml block whose first line is `# <marker>`."""
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), re.S)
    found = [b for b in blocks if b.startswith(f"# {marker}")]
    assert found, f"no yaml example starting '# {marker}' in the README"
    return str(found[0])


def test_readme_environment_example_is_valid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "production.yaml"
    path.write_text(_example("production.yaml"))
    for name in set(re.findall(r"\$\{([A-Z_]+)\}", path.read_text())):
        value = {"TELEGRAM_BOT_TOKEN": "123456789:AAexample", "ADMIN_TELEGRAM_IDS": "1,2"}
        monkeypatch.setenv(name, value.get(name, "https://hooks.example/x"))
    spec = load_environment_file(path)
    assert spec.name == "production"


def test_readme_webhook_example_is_valid() -> None:
    config = WebhookConfig.model_validate(yaml.safe_load(_example("webhook.yaml")))
    assert config.repositories


def _make_packages() -> dict[str, list[str]]:
    """The Makefile's Debian packages per target (`PACKAGES_<target> := ...`), expanded."""
    text = (REPO / "Makefile").read_text().replace("\\\n", " ")
    found: dict[str, list[str]] = {}
    for target, value in re.findall(r"(?m)^PACKAGES_(\w+) := (.*)$", text):
        words = value.split()
        found[target] = [
            p for w in words for p in (found[w[11:-1]] if w.startswith("$(PACKAGES_") else [w])
        ]
    return found


def test_readme_says_what_each_make_target_installs() -> None:
    packages = _make_packages()
    assert packages["demo"] == ["postgresql-15"]  # the demo needs no Docker, sshd or browser
    assert set(packages["test"]) <= set(packages["bench"])
    rows = {
        m.group(1): m.group(0)
        for m in re.finditer(r"(?m)^\| `make (\w+)` \|.*$", README.read_text())
    }
    for target in ("demo", "test"):
        missing = [p for p in packages[target] if f"{p}" not in rows[target]]
        assert missing == [], f"the README's make table misses {missing} for make {target}"
    extra = sorted(set(packages["bench"]) - set(packages["test"]))
    assert all(p in rows["bench"] for p in extra), extra
    whys = set(re.findall(r"(?m)^WHY_([\w.-]+) :=", (REPO / "Makefile").read_text()))
    assert set(packages["bench"]) <= whys  # every package says why it is installed
