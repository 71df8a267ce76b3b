"""The configuration reference in the README, generated so that it cannot drift.

Every key of the environment file (`slipway env apply`) and of the webhook's file, with its
type, default and meaning, comes from the settings models and their field descriptions;
the environment variables come from `VARIABLES` (a test checks that the code reads no
other). `python -m deployments.reference` rewrites the README's section between
`<!-- config-reference:start -->` and `<!-- config-reference:end -->`; `--check` only says
whether it is current.
"""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

START = "<!-- config-reference:start -->"
END = "<!-- config-reference:end -->"
README = Path(__file__).resolve().parent.parent / "README.md"


class Variable(NamedTuple):
    """One environment variable Slipway reads."""

    name: str
    default: str
    meaning: str


# By topic. The webhook's secrets are named by forge in code, so they are listed here.
VARIABLES: dict[str, tuple[Variable, ...]] = {
    "Database (when no block is named)": (
        Variable(
            "DATABASE_URL",
            "none",
            "The database: postgresql://user@host:port/db[?sslmode=...], without the password.",
        ),
        Variable("PGPASSWORD", "none", "Its password (or libpq's ~/.pgpass and PGPASSFILE)."),
        Variable("PGUSER", "postgres", "The role, when DATABASE_URL names none."),
        Variable(
            "SLIPWAY_PG_BIN",
            "none",
            "Directory of the pg_dump, pg_dumpall and pg_restore to use; else Debian's "
            "/usr/lib/postgresql/<major>/bin (newest first), then the PATH. They must be at "
            "least as new as the server.",
        ),
    ),
    "Backup store (when no block is named)": (
        Variable("SLIPWAY_BACKUP_URL", "none", "Where backups go: s3://bucket/prefix."),
        Variable(
            "AWS_ACCESS_KEY_ID",
            "boto3's chain",
            "Access key id; without keys, boto3's default chain (profile, instance role).",
        ),
        Variable("AWS_SECRET_ACCESS_KEY", "boto3's chain", "Secret access key."),
        Variable("AWS_REGION", "us-east-1", "Region (or AWS_DEFAULT_REGION); MinIO accepts any."),
        Variable(
            "AWS_ENDPOINT_URL_S3", "AWS", "S3 endpoint (or AWS_ENDPOINT_URL), e.g. MinIO's URL."
        ),
        Variable(
            "AWS_CA_BUNDLE",
            "the system's",
            "Certificates to trust for an https endpoint with a private CA (boto3's own variable).",
        ),
    ),
    "The app's storage (`mirror`, `snapshot`, `restore-files`)": (
        Variable(
            "SLIPWAY_SOURCE_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_S3",
            "The app's S3 or MinIO endpoint; each SLIPWAY_SOURCE_ variable falls back to its "
            "AWS_ one.",
        ),
        Variable("SLIPWAY_SOURCE_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID", "Its access key id."),
        Variable(
            "SLIPWAY_SOURCE_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY", "Its secret access key."
        ),
        Variable("SLIPWAY_SOURCE_REGION", "AWS_REGION", "Its region."),
    ),
    "Notifications (runs without an environment)": (
        Variable("SLACK_WEBHOOK_URL", "none", "A Slack incoming webhook."),
        Variable("SLACK_BOT_TOKEN", "none", "A Slack bot token (xoxb-...), instead of a webhook."),
        Variable("SLACK_CHANNEL", "none", "The bot token's channel: #deploys or C0123...."),
        Variable("SLACK_API_URL", "https://slack.com/api/", "Slack Web API base URL."),
        Variable("TELEGRAM_BOT_TOKEN", "none", "A Telegram bot token (123456789:AA...)."),
        Variable("ADMIN_TELEGRAM_IDS", "none", "Telegram chat ids, comma-separated."),
        Variable("TELEGRAM_API_URL", "https://api.telegram.org", "Telegram Bot API base URL."),
        Variable(
            "SLIPWAY_SLACK_BLOCK", "none", "A saved SlackNotifier block to use instead of SLACK_*."
        ),
        Variable(
            "SLIPWAY_TELEGRAM_BLOCK",
            "none",
            "A saved TelegramNotifier block to use instead of TELEGRAM_*.",
        ),
        Variable("SLIPWAY_ENV", "none", "The environment named in notices of runs that have none."),
    ),
    "Prefect": (
        Variable(
            "PREFECT_API_URL",
            "none: a local API",
            "The Prefect server's API, e.g. http://prefect:4200/api. One that does not answer, "
            "or refuses the credentials, is an error before anything runs.",
        ),
        Variable(
            "PREFECT_API_KEY", "none", "Prefect's own: the API's credentials, when it needs them."
        ),
        Variable(
            "PREFECT_HOME", "~/.prefect", "Prefect's own: its profile, and the local API's data."
        ),
        Variable(
            "PREFECT_UI_URL",
            "from PREFECT_API_URL",
            "Prefect's own: the UI address that notices link runs to.",
        ),
        Variable(
            "SLIPWAY_LOCAL_API_IDLE_SECONDS",
            "600",
            "Without PREFECT_API_URL: how long the local API, shared by the commands of one "
            "PREFECT_HOME, stays up with no command using it.",
        ),
        Variable(
            "SLIPWAY_LOCAL_API_START_TIMEOUT",
            "180",
            "How long a command waits for the local API to start (its first start migrates "
            "its database).",
        ),
        Variable(
            "PREFECT_FLOWS_HEARTBEAT_FREQUENCY",
            "none for commands",
            "Flow-run heartbeats (seconds) for runs the `slipway` command starts; workers keep "
            "Prefect's default.",
        ),
    ),
    "Git-tag webhook (`slipway webhook serve`)": (
        Variable("SLIPWAY_WEBHOOK_SECRET", "none", "The secret shared with every forge."),
        Variable(
            "SLIPWAY_GITHUB_WEBHOOK_SECRET", "SLIPWAY_WEBHOOK_SECRET", "GitHub's secret (HMAC)."
        ),
        Variable(
            "SLIPWAY_GITLAB_WEBHOOK_SECRET", "SLIPWAY_WEBHOOK_SECRET", "GitLab's secret token."
        ),
        Variable(
            "SLIPWAY_GITEA_WEBHOOK_SECRET", "SLIPWAY_WEBHOOK_SECRET", "Gitea's secret (HMAC)."
        ),
    ),
    "Encrypted backups (age)": (
        Variable(
            "SLIPWAY_BACKUP_RECIPIENTS",
            "none: not encrypted",
            "age recipients (age1..., comma-separated) that backups and snapshots are "
            "encrypted to; the store block's encryption_recipients win when set.",
        ),
        Variable(
            "SLIPWAY_BACKUP_IDENTITY_FILE",
            "none",
            "An age identity file (as age-keygen or `slipway keygen -o` writes it; several "
            "identities accepted) that verify --drill, restore and restore-files decrypt "
            "with, beside the store block's encryption_identity.",
        ),
    ),
    "Docker (compose targets)": (
        Variable(
            "DOCKER_HOST",
            "the local engine",
            "The Docker engine, when the target sets no docker_host.",
        ),
        Variable("DOCKER_CONFIG", "~/.docker", "Where the docker CLI finds its plugins (Compose)."),
        Variable(
            "COMPOSE_PROJECT_NAME",
            "the directory's name",
            "Compose's own: the project name, when neither project_name nor the file sets one.",
        ),
    ),
}


def variable_names() -> set[str]:
    return {v.name for group in VARIABLES.values() for v in group}


def _models(annotation: Any) -> list[type[BaseModel]]:
    """The models an annotation holds (inside lists, mappings, unions and Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in get_args(annotation):
        found += [m for m in _models(arg) if m not in found]
    return found


def _type(annotation: Any) -> str:
    """How the YAML spells a value of this type."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return _type(args[0])
    if origin in (Union, types.UnionType):
        kinds = [_type(a) for a in args if a is not type(None)]
        return " or ".join(dict.fromkeys(kinds))
    if origin is Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin is list:
        inner = _type(args[0])
        return "list of mappings (below)" if inner == "mapping (below)" else f"list of {inner}"
    if origin is dict:
        return f"mapping of {_type(args[0])} to {_type(args[1])}".replace(" mapping ", " mappings ")
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping (below)"
    names: dict[Any, str] = {
        str: "text",
        int: "integer",
        float: "number",
        bool: "true/false",
        Path: "path",
    }
    return names.get(annotation, "secret text" if annotation is SecretStr else str(annotation))


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "(below)"
    if value is None:
        return "none"
    if isinstance(value, str | Path):
        return f"`{value}`"
    return f"`{json.dumps(value)}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _paths(root: type[BaseModel]) -> dict[type[BaseModel], list[str]]:
    """Every model reachable from `root` (in the order found), with the key paths it is at."""
    paths: dict[type[BaseModel], list[str]] = {root: [""]}
    order = [root]
    for model in order:  # grows as nested models are found
        for name, field in model.model_fields.items():
            for nested in _models(field.annotation):
                # The only mappings of models are per-service lists (a target's health gates).
                container: Any = get_origin(field.annotation)
                suffix = {list: "[]", dict: ".<service>[]"}.get(container, "")
                if nested not in paths:
                    paths[nested] = []
                    order.append(nested)
                paths[nested].append(f"{paths[model][0]}.{name}".lstrip(".") + suffix)
    return paths


def _tables(root: type[BaseModel]) -> Iterator[str]:
    """One table per model reachable from `root`, headed by every path it appears at."""
    paths = _paths(root)
    for model in paths:
        heading = ", ".join(f"`{p}`" for p in paths[model] if p) or "top level"
        doc = _cell((model.__doc__ or "").strip().split("\n\n")[0])
        yield f"#### {heading}\n"
        if doc:
            yield f"{doc}\n"
        yield "| key | type | default | meaning |\n|---|---|---|---|"
        for name, field in model.model_fields.items():
            meaning = _description(model, name, field)
            yield (
                f"| `{name}` | {_type(field.annotation)} | {_default(field)} | {_cell(meaning)} |"
            )
        yield ""


def _description(model: type[BaseModel], name: str, field: FieldInfo) -> str:
    return field.description or ""


def missing_descriptions(root: type[BaseModel]) -> list[str]:
    """`Model.field` for every field reachable from `root` that has no description."""
    return [
        f"{m.__name__}.{name}"
        for m in _paths(root)
        for name, field in m.model_fields.items()
        if not _description(m, name, field)
    ]


def roots() -> list[tuple[str, str, type[BaseModel]]]:
    """(title, how it is used, model) of every configuration file."""
    from blocks.env_file_spec import EnvironmentFile
    from deployments.webhook import WebhookConfig

    return [
        (
            "Environment file",
            "`slipway env apply FILE.yaml` turns it into the environment's blocks. Secrets are "
            '`"${VAR}"` references, expanded from the shell that applies the file.',
            EnvironmentFile,
        ),
        (
            "Webhook file",
            "`slipway webhook serve --config FILE.yaml`; its secrets come from the environment "
            "variables below.",
            WebhookConfig,
        ),
    ]


def render() -> str:
    """The section between the markers, markers excluded."""
    parts = [
        "<!-- generated by `python -m deployments.reference` from the settings models: "
        "edit the models' descriptions, then run it -->",
        "",
    ]
    for title, usage, model in roots():
        parts += [f"### {title}", "", usage, ""]
        parts += list(_tables(model))
    parts += ["### Environment variables", ""]
    for topic, variables in VARIABLES.items():
        parts += [f"#### {topic}", "", "| variable | default | meaning |", "|---|---|---|"]
        parts += [f"| `{v.name}` | {_cell(v.default)} | {_cell(v.meaning)} |" for v in variables]
        parts.append("")
    return "\n".join(parts)


def updated(readme: str) -> str:
    """`readme` with its reference section replaced by the current one."""
    head, start, rest = readme.partition(START)
    _, end, tail = rest.partition(END)
    if not start or not end:
        raise SystemExit(f"error: no {START} ... {END} section in the README: add the markers")
    return f"{head}{START}\n{render()}\n{END}{tail}"


def main(argv: list[str]) -> int:
    text = README.read_text()
    new = updated(text)
    if "--check" in argv:
        if new != text:
            print(
                f"error: the configuration reference is stale at {README}: "
                "run python -m deployments.reference",
                file=sys.stderr,
            )
            return 1
        return 0
    if new != text:
        README.write_text(new)
        print(f"updated the configuration reference in {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
