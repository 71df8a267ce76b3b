"""`slipway env apply`'s file: secrets only as ${VAR}, one-line errors, nothing half-read."""

from __future__ import annotations

from pathlib import Path

import pytest

from blocks.env_file import load_environment_file
from blocks.errors import ConfigError

GOOD = """
name: production
database: {url: "postgresql://app@db:5432/app", password: "${DB_PASSWORD}"}
store:
  url: s3://backups/prod
  endpoint_url: http://minio:9000
  access_key_id: backup
  secret_access_key: "${BACKUP_SECRET}"
target: {project_directory: /srv/app, services: [api, worker, web]}
health_checks: [{kind: http, url: "http://localhost:3000/health", version_field: version}]
migrations: {directory: "/srv/app/releases/{version}/prisma/migrations"}
policy: {database_rollback: ask, approve_restore: true}
notifiers:
  slack: {webhook_url: "${SLACK_WEBHOOK_URL}"}
  telegram: {bot_token: "${TELEGRAM_BOT_TOKEN}", chat_ids: "${ADMIN_TELEGRAM_IDS}"}
"""
STORE_LAST_LINE = 'secret_access_key: "${BACKUP_SECRET}"'
# A throwaway age identity (what `age-keygen` writes), for the files that must refuse it.
IDENTITY = "AGE-SECRET-KEY-1HGN8D99Z0PCAZ4CPSAPEH30Q35DULLWDRCA9TKQNSC3THW4EQ36SJ97HCJ"
SECRETS = {
    "DB_PASSWORD": "pg-secret",
    "BACKUP_SECRET": "s3-secret",
    "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T/B/x",
    "TELEGRAM_BOT_TOKEN": "123:abc",
    "ADMIN_TELEGRAM_IDS": "111,222",
}


@pytest.fixture
def secrets_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "env.yaml"
    path.write_text(text)
    return path


@pytest.mark.usefixtures("secrets_set")
def test_references_are_expanded(tmp_path: Path) -> None:
    spec = load_environment_file(write(tmp_path, GOOD))
    assert spec.name == "production"
    assert spec.database.password == SECRETS["DB_PASSWORD"]
    assert spec.store.secret_access_key == SECRETS["BACKUP_SECRET"]
    assert spec.notifiers.telegram is not None
    assert spec.notifiers.telegram.chat_ids == "111,222"
    assert spec.target.services == ["api", "worker", "web"]
    assert spec.target.kind == "compose"  # the default kind
    assert spec.policy.database_rollback == "ask"
    assert spec.health_checks[0].version_field == "version"


@pytest.mark.usefixtures("secrets_set")
@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('"${DB_PASSWORD}"', '"hunter2"'), "database.password in .* is a literal secret"),
        (('"${BACKUP_SECRET}"', "plain"), "store.secret_access_key in .* is a literal secret"),
        (
            ('"${SLACK_WEBHOOK_URL}"', "https://hooks.slack.com/services/T/B/x"),
            "notifiers.slack.webhook_url in .* is a literal secret",
        ),
        (("postgresql://app@db", "postgresql://app:pw@db"), "database.url in .* holds a password"),
        (
            ('"${DB_PASSWORD}"', '"${NOT_SET_ANYWHERE}"'),
            r"\$\{NOT_SET_ANYWHERE\}, which is not set",
        ),
        (("kind: http", "kind: carrier-pigeon"), "health_checks.0.kind"),
        (("name: production", "name: Prod Env"), "environment name 'Prod Env'"),
        (("services: [api, worker, web]", "services: [api, api]"), "each service once"),
        (("policy: {", "policy: {surprise: 1, "), "policy.surprise"),
        # Each kind of target validates its own keys.
        (("target: {", "target: {kind: nomad, "), "target: unknown target kind: the kinds are"),
        (("target: {", "target: {kind: ecs, "), "target.ecs.project_directory"),
        (("target: {", "target: {kind: compose, cluster: x, "), "target.compose.cluster"),
        # age keys of the store: public recipients only, the identity only as a reference.
        (
            (STORE_LAST_LINE, STORE_LAST_LINE + "\n  encryption_recipients: [age1nope]"),
            "'age1nope' is not",
        ),
        (
            (STORE_LAST_LINE, STORE_LAST_LINE + "\n  encryption_recipients: " + IDENTITY),
            "an identity .* is not a recipient",
        ),
        (
            (STORE_LAST_LINE, STORE_LAST_LINE + "\n  encryption_identity: " + IDENTITY),
            "store.encryption_identity in .* is a literal secret",
        ),
        (
            (STORE_LAST_LINE, STORE_LAST_LINE + '\n  encryption_identity: "${DB_PASSWORD}"'),
            "line 1 of the identity is not an age identity",
        ),
    ],
)
def test_bad_files_get_one_line(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    old, new = change
    assert old in GOOD
    text = GOOD.replace(old, new, 1)
    with pytest.raises(ConfigError, match=message) as raised:
        load_environment_file(write(tmp_path, text))
    assert "\n" not in str(raised.value)
    for secret in ("hunter2", "pg-secret", "s3-secret", IDENTITY):
        assert secret not in str(raised.value)


def test_not_yaml_or_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_environment_file(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_environment_file(write(tmp_path, "name: [unclosed"))
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_environment_file(write(tmp_path, "- a list"))


SSH = """
name: production
database: {url: "postgresql://app@db:5432/app", password: "${DB_PASSWORD}"}
store: {url: s3://backups/prod, secret_access_key: "${BACKUP_SECRET}", access_key_id: backup}
target:
  kind: ssh
  hosts: [web-1.example.com, "10.0.0.6:2222"]
  user: deploy
  known_hosts: /etc/slipway/known_hosts
  services: [qubeless-api, qubeless-worker, qubeless-web]
  deploy_steps: ["git fetch --tags && git checkout {version}", "pnpm install --frozen-lockfile"]
  version_command: git describe --tags --exact-match
  health_checks: {qubeless-api: [{kind: http, url: "http://{host}:3001/health"}]}
ssh: {private_key: "${DEPLOY_SSH_KEY}", env: {GIT_TOKEN: "${GIT_TOKEN}"}}
"""


@pytest.fixture
def ssh_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DEPLOY_SSH_KEY", "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n")
    monkeypatch.setenv("GIT_TOKEN", "ghp-secret")


@pytest.mark.usefixtures("ssh_secrets")
def test_an_ssh_target_and_its_secrets(tmp_path: Path) -> None:
    spec = load_environment_file(write(tmp_path, SSH))
    assert spec.target.kind == "ssh"
    assert spec.target.addresses() == [("web-1.example.com", 22), ("10.0.0.6", 2222)]
    assert spec.target.use_sudo()  # deploy is not root
    assert spec.ssh is not None
    assert spec.ssh.env == {"GIT_TOKEN": "ghp-secret"}


@pytest.mark.usefixtures("ssh_secrets")
@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('"${DEPLOY_SSH_KEY}"', "AAAAkey"), "ssh.private_key in .* is a literal secret"),
        (('"${GIT_TOKEN}"', "ghp-literal"), "ssh.env.GIT_TOKEN in .* is a literal secret"),
        (("kind: ssh", "kind: ssh\n  bogus: 1"), "target.ssh.bogus"),
        (("  version_command: git describe --tags --exact-match\n", ""), "say how a host"),
        (
            ('  deploy_steps: ["git fetch', '  prepare_steps: ["git fetch'),
            "target.ssh.deploy_steps",
        ),
        (("[web-1.example.com,", "[web 1,"), "host 'web 1' is not an address"),
        (
            ("{kind: http,", "{kind: container,"),
            "container and rollout health checks are for compose",
        ),
        (("env: {GIT_TOKEN:", "env: {GIT-TOKEN:"), "'GIT-TOKEN' is not a variable name"),
    ],
)
def test_bad_ssh_files_get_one_line(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    old, new = change
    assert old in SSH
    with pytest.raises(ConfigError, match=message) as raised:
        load_environment_file(write(tmp_path, SSH.replace(old, new, 1)))
    assert "\n" not in str(raised.value)
    assert "ghp-" not in str(raised.value)


@pytest.mark.usefixtures("ssh_secrets")
def test_ssh_secrets_need_an_ssh_target(tmp_path: Path) -> None:
    text = GOOD + 'ssh: {private_key: "${DEPLOY_SSH_KEY}"}\n'
    with pytest.raises(
        ConfigError, match=r"ssh in .* is for an ssh target; this target is compose"
    ):
        load_environment_file(write(tmp_path, text))
