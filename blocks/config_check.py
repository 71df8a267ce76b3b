"""Every problem of the configuration a command reads from the environment, found at once.

The command line runs this before it imports Prefect, so a wrong configuration is refused
in about a second, with all of its problems in one message. What a block named on the
command line replaces is the block's to say (Prefect loads it), so it is not checked here.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from blocks.errors import ConfigError, SlipwayError
from blocks.settings import PostgresSettings, StorageSettings

T = TypeVar("T")


def combined(problems: Sequence[str], what: str = "the configuration") -> ConfigError:
    """One error for all the problems: a single one as it is, several in one line."""
    if len(problems) == 1:
        return ConfigError(problems[0])
    return ConfigError(
        f"{what} has {len(problems)} problems: {'; '.join(problems)}: fix them and run again"
    )


@dataclass(frozen=True)
class Place:
    """A bucket or directory a command reads or writes, as typed on the command line.

    `env_prefix` says whose S3 endpoint and keys apply (AWS_: the backup side,
    SLIPWAY_SOURCE_: the app's); `block` is the ObjectStorage block that replaces them;
    `source` means it is read, so a directory must exist.
    """

    ref: str
    what: str
    env_prefix: str = "AWS_"
    block: str | None = None
    source: bool = False


def check_environment(
    *,
    database: bool | None = False,
    store: bool = False,
    places: Sequence[Place] = (),
    database_urls: Sequence[tuple[str, str]] = (),
) -> None:
    """Raise one `ConfigError` naming every problem found; nothing is contacted.

    database: DATABASE_URL is needed (True), or checked only when set (None); store:
    SLIPWAY_BACKUP_URL and its credentials; places: buckets or directories given as
    arguments; database_urls: (url, option) pairs given on the command line.
    """
    problems: list[str] = []

    def attempt(read: Callable[[], T]) -> T | None:
        try:
            return read()
        except SlipwayError as exc:
            problems.append(str(exc))
        return None

    for url, option in database_urls:
        attempt(functools.partial(_database_url, url, option))
    if database or (database is None and os.environ.get("DATABASE_URL")):
        attempt(_database_from_env)
    if store:
        found = attempt(_store_from_env)
        if found is not None:
            problems += _storage_problems(found, "AWS_")
    for place in places:
        problems += _place_problems(place)
    if problems:
        raise combined(problems)


def _database_url(url: str, option: str) -> PostgresSettings:
    from blocks.input_checks import refuse_url_password

    refuse_url_password(url, option)
    try:
        return PostgresSettings.from_url(url)
    except ValueError as exc:  # urlsplit on a malformed port, say
        raise ConfigError(f"{option} is malformed ({exc}): fix it") from exc


def _database_from_env() -> PostgresSettings:
    url = os.environ.get("DATABASE_URL")
    if not url:
        raise ConfigError("no database configured: set DATABASE_URL or pass --database-block")
    try:
        return PostgresSettings.from_url(url)
    except ValueError as exc:  # the URL may hold a password: never echo it
        raise ConfigError(f"DATABASE_URL is malformed ({exc}): fix it") from exc
    except ConfigError as exc:
        raise ConfigError("DATABASE_URL must look like postgresql://user@host:5432/dbname") from exc


def _store_from_env() -> StorageSettings:
    url = os.environ.get("SLIPWAY_BACKUP_URL")
    if not url:
        raise ConfigError(
            "no backup store configured: set SLIPWAY_BACKUP_URL=s3://bucket/prefix "
            "or pass --store-block"
        )
    try:
        return StorageSettings.from_url(url)
    except (ConfigError, ValueError) as exc:
        raise ConfigError(f"SLIPWAY_BACKUP_URL {url!r} must look like s3://bucket/prefix") from exc


def _place_problems(place: Place) -> list[str]:
    ref = place.ref
    if ref.startswith("s3:") or "://" in ref:
        if not ref.startswith("s3://") or not _netloc(ref):
            if ref.startswith("s3:"):
                return [f"{place.what} {ref!r} is a malformed S3 URL: write s3://bucket/prefix"]
            return [f"{place.what} {ref!r} is neither s3://bucket/prefix nor a local directory"]
        if place.block:
            return []
        return _storage_problems(StorageSettings.from_url(ref, place.env_prefix), place.env_prefix)
    if place.source and not Path(ref).expanduser().is_dir():
        return [f"{place.what} {ref!r} is not a directory: fix the path"]
    return []


def _netloc(url: str) -> str:
    try:
        return urlsplit(url).netloc
    except ValueError:  # an unclosed [IPv6 bracket, say
        return ""


def _names(env_prefix: str, name: str) -> str:
    """The variables a setting is read from, as a message names them."""
    return f"{env_prefix}{name}" + ("" if env_prefix == "AWS_" else f" (or AWS_{name})")


def _variable(env_prefix: str, *names: str) -> str:
    """The variable a setting was read from, in `StorageSettings.from_url`'s order."""
    prefixes = [env_prefix] if env_prefix == "AWS_" else [env_prefix, "AWS_"]
    candidates = [prefix + name for prefix in prefixes for name in names]
    return next((c for c in candidates if os.environ.get(c)), candidates[0])


def _storage_problems(settings: StorageSettings, env_prefix: str) -> list[str]:
    """Endpoint and keys that cannot work, before a request is signed."""
    where = f"s3://{settings.bucket}"
    problems = []
    endpoint = settings.endpoint_url
    if endpoint is not None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            variable = _variable(env_prefix, "ENDPOINT_URL_S3", "ENDPOINT_URL")
            problems.append(f"{variable} {endpoint!r} must look like https://host:port")
    has_id = settings.access_key_id is not None
    has_secret = settings.secret_access_key is not None
    if has_id != has_secret:
        present, missing = (
            ("ACCESS_KEY_ID", "SECRET_ACCESS_KEY")
            if has_id
            else ("SECRET_ACCESS_KEY", "ACCESS_KEY_ID")
        )
        problems.append(
            f"{_variable(env_prefix, present)} is set without {_names(env_prefix, missing)} "
            f"for {where}: set both"
        )
    # An instance role serves AWS's own S3 only: with an endpoint of its own (MinIO,
    # SeaweedFS...), no keys means none at all.
    elif not has_id and endpoint is not None and not _local_chain_has_keys():
        problems.append(
            f"no S3 credentials for {where} at {endpoint}: set "
            f"{_names(env_prefix, 'ACCESS_KEY_ID')} and "
            f"{_names(env_prefix, 'SECRET_ACCESS_KEY')}, or a profile"
        )
    return problems


def _local_chain_has_keys() -> bool:
    """Whether boto3's default chain finds keys without the network (profile, files...)."""
    import botocore.session
    from botocore.exceptions import BotoCoreError

    resolver = botocore.session.get_session().get_component("credential_provider")
    for name in ("container-role", "iam-role"):
        resolver.remove(name)
    try:
        return resolver.load_credentials() is not None
    except BotoCoreError:  # a broken profile: boto3 says what is wrong when it is used
        return True


def is_snapshot_ref(ref: str) -> bool:
    """`NAME@ID` or `NAME@latest` names a snapshot; a URL or a path names a mirror."""
    return "@" in ref and not ref.startswith(("s3://", "/", "."))
