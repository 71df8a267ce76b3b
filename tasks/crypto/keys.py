"""age keys of encrypted backups: the recipients backups go to, the identities that read them.

Backups and snapshots need only public recipients (`age1...`); drills and restores need an
identity (`AGE-SECRET-KEY-1...`). A recipient's key id, recorded in manifests, is the
recipient itself: public, and what `age-keygen` prints as `# public key:`, so an operator
finds the matching key file with grep. Identities are never echoed, not even in errors.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from pyrage import IdentityError, RecipientError, x25519

from blocks.errors import ConfigError, SlipwayError
from blocks.settings import StorageSettings

RECIPIENTS_VAR = "SLIPWAY_BACKUP_RECIPIENTS"
IDENTITY_FILE_VAR = "SLIPWAY_BACKUP_IDENTITY_FILE"
SECRET_PREFIX = "AGE-SECRET-KEY-"  # noqa: S105 - the format's prefix, no secret
NO_IDENTITY_FIX = (
    f"set {IDENTITY_FILE_VAR} to a file holding one of its identities (as age-keygen or "
    "`slipway keygen -o FILE` wrote it), or the store block's encryption_identity"
)


def parse_recipients(values: Iterable[str], where: str) -> list[x25519.Recipient]:
    """Each non-empty value as an X25519 recipient; the first bad one is a `ConfigError`."""
    found = []
    for value in (v.strip() for v in values):
        if not value:
            continue
        if value.upper().startswith(SECRET_PREFIX):
            raise ConfigError(
                f"{where} holds an identity (a secret key), not a recipient: give its public "
                "key (age1..., `age-keygen -y FILE` prints it) and keep the identity away from "
                "the backup host"
            )
        try:
            found.append(x25519.Recipient.from_str(value))
        except RecipientError as exc:
            raise ConfigError(
                f"{value[:80]!r} in {where} is not an age recipient ({exc}): give X25519 public "
                "keys, age1..., as age-keygen or `slipway keygen` prints them"
            ) from exc
    return found


def backup_recipients(store: StorageSettings) -> list[x25519.Recipient]:
    """Whom backups are encrypted to: the store block's recipients, else the environment's;
    an empty list means no encryption."""
    if store.encryption_recipients:
        return parse_recipients(store.encryption_recipients, "the store block's recipients")
    return parse_recipients(os.environ.get(RECIPIENTS_VAR, "").split(","), RECIPIENTS_VAR)


def key_ids(recipients: Sequence[x25519.Recipient]) -> list[str]:
    """What a manifest records of its recipients: the `age1...` strings, sorted, unique."""
    return sorted({str(r) for r in recipients})


def parse_identities(text: str, where: str) -> list[x25519.Identity]:
    """The identities of an age identity file: one a line, blank lines and `#` comments."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            found.append(x25519.Identity.from_str(line))
        except IdentityError as exc:
            raise ConfigError(
                f"line {number} of {where} is not an age identity ({exc}): it must hold "
                "AGE-SECRET-KEY-1... lines as age-keygen writes them"
            ) from None  # the line may be a secret: never in a traceback either
    return found


def backup_identities(store: StorageSettings) -> list[x25519.Identity]:
    """Every identity given: the store block's, then those of SLIPWAY_BACKUP_IDENTITY_FILE."""
    found = []
    if store.encryption_identity is not None:
        secret = store.encryption_identity.get_secret_value()
        found += parse_identities(secret, "the store block's encryption_identity")
    if path := os.environ.get(IDENTITY_FILE_VAR):
        try:
            text = Path(path).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not text"
            raise ConfigError(
                f"cannot read {IDENTITY_FILE_VAR} at {path} ({reason}): fix the path or the "
                "file's permissions"
            ) from None
        found += parse_identities(text, f"{IDENTITY_FILE_VAR} {path}")
    return found


def identities_for(
    what: str, recipients: Sequence[str], store: StorageSettings
) -> list[x25519.Identity]:
    """The identities given, when one of them is a recipient of `what`; else a one-line error.

    Checked against the manifest's key ids before anything is read or changed.
    """
    identities = backup_identities(store)
    to = ", ".join(recipients) or "unknown recipients"
    if not identities:
        raise SlipwayError(
            f"{what} is encrypted to {to}, and no identity was given: {NO_IDENTITY_FIX}"
        )
    if not {str(i.to_public()) for i in identities} & set(recipients):
        raise SlipwayError(
            f"{what} is encrypted to {to}; none of the {len(identities)} given identities "
            f"matches: {NO_IDENTITY_FIX}"
        )
    return identities


def new_identity(now: datetime | None = None) -> tuple[str, str]:
    """(identity file text as age-keygen writes it, its public key)."""
    identity = x25519.Identity.generate()
    public = str(identity.to_public())
    created = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"# created: {created}\n# public key: {public}\n{identity}\n", public
