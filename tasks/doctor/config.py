"""What `slipway doctor` checks against: the configuration, read the way the commands read it,
with every problem found collected instead of stopping at the first."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from pydantic import ValidationError

from blocks.errors import SlipwayError
from blocks.text import error_line

if TYPE_CHECKING:
    from blocks.environment import MigrationSettings
    from blocks.notifiers import NotifierBlock
    from blocks.rollout import TargetSettings
    from blocks.settings import PostgresSettings, StorageSettings

T = TypeVar("T")
BLOCK_VARIABLES = ("SLIPWAY_SLACK_BLOCK", "SLIPWAY_TELEGRAM_BLOCK")


@dataclass
class DoctorConfig:
    """The parts found (None: missing or broken) and the problems, one line each."""

    source: str
    database: PostgresSettings | None = None
    store: StorageSettings | None = None
    notifiers: list[NotifierBlock] = field(default_factory=list)
    # Why the notifiers could not even be read (they are not a configuration error).
    notifiers_unread: str | None = None
    target: TargetSettings | None = None
    migrations: MigrationSettings | None = None
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """What was found, safe to print."""
        parts = [self.source]
        if self.database is not None:
            parts.append(f"database {self.database.display()}")
        if self.store is not None:
            endpoint = f" at {self.store.endpoint_url}" if self.store.endpoint_url else ""
            parts.append(f"store {self.store.url()}{endpoint}")
        if self.target is not None:
            parts.append(f"target {self.target.kind}")
        names = [notifier_name(n) for n in self.notifiers]
        parts.append(f"notifiers {', '.join(names)}" if names else "no notifier")
        return "; ".join(parts)

    def attempt(self, what: str, read: Callable[[], T]) -> T | None:
        """`read()`, or None with its one-line problem recorded."""
        try:
            return read()
        except SlipwayError as exc:
            self.problems.append(str(exc))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            self.problems.append(f"{what}: {where}: {first['msg']}")
        except Exception as exc:  # a block that cannot be read, the API failing mid-way
            self.problems.append(f"{what}: {type(exc).__name__}: {error_line(exc)}")
        return None

    def read_notifiers(self, read: Callable[[], list[NotifierBlock]]) -> None:
        found = self.attempt("notifiers", read)
        if found is None:
            self.notifiers_unread = "not read: see the configuration row"
        self.notifiers = found or []


def notifier_name(notifier: NotifierBlock) -> str:
    """`slack` or `telegram`: the notifier's row in the report."""
    return type(notifier).__name__.removesuffix("Notifier").lower()


def _store_with_credentials(store: StorageSettings, block: str) -> StorageSettings:
    try:
        store.credentials()
    except SlipwayError as exc:
        raise SlipwayError(
            f"{exc} in block {block}: set store.access_key_id and store.secret_access_key in "
            "the environment file and apply it again"
        ) from exc
    return store


def from_process_environment(blocks_readable: bool) -> DoctorConfig:
    """DATABASE_URL, SLIPWAY_BACKUP_URL with the AWS_* keys, and the notifier variables,
    checked as the commands check them; `blocks_readable`: a Prefect API is there to load
    the notifier blocks SLIPWAY_SLACK_BLOCK and SLIPWAY_TELEGRAM_BLOCK name."""
    from blocks.config_check import check_environment
    from blocks.settings import PostgresSettings, StorageSettings
    from tasks.notify import configured_notifiers

    def database() -> PostgresSettings:
        check_environment(database=True)
        return PostgresSettings.from_env()

    def store() -> StorageSettings:
        check_environment(store=True)
        return StorageSettings.from_env()

    config = DoctorConfig("DATABASE_URL and SLIPWAY_BACKUP_URL")
    config.database = config.attempt("DATABASE_URL", database)
    config.store = config.attempt("SLIPWAY_BACKUP_URL", store)
    blocks = [v for v in BLOCK_VARIABLES if os.environ.get(v)]
    if blocks and not blocks_readable:
        config.notifiers_unread = (
            f"{' and '.join(blocks)} name blocks of a Prefect API, and none runs: set "
            "PREFECT_API_URL, or start the local one (any slipway command does)"
        )
    else:
        config.read_notifiers(lambda: configured_notifiers(None))
    return config


def from_environment(name: str) -> DoctorConfig:
    """The environment's blocks, read from the Prefect API as `slipway release` reads them."""
    from blocks.environment import Environment

    config = DoctorConfig(f"environment {name}")
    environment = config.attempt(f"environment {name}", lambda: Environment.resolve(name))
    if environment is None:
        return config
    config.target = environment.target
    config.migrations = environment.migrations
    config.database = config.attempt(environment.database_block, environment.database)
    store_block = environment.store_block
    config.store = config.attempt(
        store_block,
        lambda: _store_with_credentials(environment.store(), store_block),
    )
    config.read_notifiers(environment.notifiers)
    return config
