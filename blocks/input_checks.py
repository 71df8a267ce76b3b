"""Checks of what people type: environment names, versions, database URLs.

Each raises a `SlipwayError` whose one line names the problem and the fix; the command line
runs them before anything starts, and the flows again, for runs started elsewhere.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

from blocks.errors import ConfigError, SlipwayError
from blocks.rollout import IMAGE_TAG

# Prefect's block-name rule. Anything else could name another block once Prefect's client
# has normalised the URL it is sent to (`x/../prod` loads `prod`).
BLOCK_NAME = r"[a-z0-9-]+"


def check_environment_name(name: str) -> str:
    """The environment's name, when it can only ever name one block."""
    if not re.fullmatch(BLOCK_NAME, name):
        raise ConfigError(
            f"environment name {name!r} is not a block name: use lowercase letters, digits "
            "and dashes, e.g. production"
        )
    return name


def check_version(version: str, what: str = "version") -> None:
    """A version can be released only if it can be every service's image tag."""
    if not re.fullmatch(IMAGE_TAG, version):
        raise SlipwayError(
            f"{what} {version!r} cannot be an image tag: use letters, digits, '.', '_' and '-' "
            "(at most 128, not starting with '.' or '-'), e.g. v1.4.2"
        )


def refuse_url_password(url: str, option: str) -> None:
    """A database URL given on the command line must not carry a password: `ps` shows it."""
    parts = urlsplit(url)
    try:
        in_query = "password" in parse_qs(parts.query)
        has_password = parts.password is not None or in_query
    except ValueError:  # a malformed URL: the parser that reads it says why
        return
    if has_password:
        raise ConfigError(
            f"{option} holds a password, which any user of this machine can read in `ps`: "
            "remove it and set PGPASSWORD (or ~/.pgpass, or use a block)"
        )
