"""What an ssh target needs that is secret, as a Prefect block: a private key and variables.

    credentials = SshCredentials(private_key=SecretStr(Path("deploy_ed25519").read_text()),
                                 env={"GIT_TOKEN": SecretStr("...")})
    credentials.save("production-ssh")   # then the target's credentials_block: production-ssh

The key is handed to paramiko in memory; the variables reach remote commands through the
SSH channel's standard input, never a command line.
"""

from __future__ import annotations

import io

import paramiko
from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from blocks.base import load_named
from blocks.errors import ConfigError

_KEY_TYPES: tuple[type[paramiko.PKey], ...] = (
    paramiko.Ed25519Key,
    paramiko.ECDSAKey,
    paramiko.RSAKey,
)


class SshCredentials(Block):
    """A private key (and its passphrase) for the hosts, and secret variables for commands."""

    _block_type_name = "Slipway SSH Credentials"
    _block_type_slug = "slipway-ssh-credentials"
    _description = "The private key Slipway logs in to hosts with, and secret command variables."

    private_key: SecretStr | None = Field(
        default=None,
        description="The private key, OpenSSH or PEM text (empty: the SSH agent).",
    )
    passphrase: SecretStr | None = Field(default=None, description="The key's passphrase.")
    env: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Secret variables every remote command gets, e.g. a registry token.",
    )

    @classmethod
    def resolve(cls, block_name: str) -> SshCredentials:
        return load_named(cls, block_name)

    def pkey(self) -> paramiko.PKey | None:
        """The private key, parsed; None when there is none."""
        if self.private_key is None:
            return None
        return parse_private_key(
            self.private_key.get_secret_value(),
            self.passphrase.get_secret_value() if self.passphrase else None,
            "the private key of the SshCredentials block",
        )

    def variables(self) -> dict[str, str]:
        return {k: v.get_secret_value() for k, v in self.env.items()}


def parse_private_key(text: str, passphrase: str | None, where: str) -> paramiko.PKey:
    """A private key of any type paramiko reads, or a one-line error naming `where`."""
    for key_type in _KEY_TYPES:
        try:
            return key_type.from_private_key(io.StringIO(text), password=passphrase)
        except paramiko.PasswordRequiredException as exc:
            raise ConfigError(f"{where} is encrypted: give its passphrase") from exc
        except paramiko.SSHException as exc:
            if "password" in str(exc).lower() or "passphrase" in str(exc).lower():
                raise ConfigError(f"{where}: wrong passphrase") from exc
            continue
        except ValueError:
            continue
    raise ConfigError(
        f"{where} is not a private key paramiko reads (OpenSSH or PEM, ed25519, ecdsa or rsa)"
    )
