"""What Slipway's blocks share: a saved block by name, or the environment's configuration."""

from __future__ import annotations

from typing import Self, TypeVar

from prefect.blocks.core import Block

from blocks.errors import ConfigError

B = TypeVar("B", bound=Block)


def load_named(cls: type[B], block_name: str) -> B:
    """The saved block of that type and name, or a one-line error naming it."""
    try:
        loaded: B = cls.load(block_name)  # type: ignore[assignment]
    except ValueError as exc:
        raise ConfigError(
            f"no {cls.get_block_type_slug()} block named {block_name!r}: create it or fix the name"
        ) from exc
    return loaded


class SlipwayBlock(Block):
    """A block whose settings class also reads the environment (`from_env`)."""

    @classmethod
    def resolve(cls, block_name: str | None) -> Self:
        """The saved block of that name, else the configuration from the environment."""
        if not block_name:
            return cls.from_env()  # type: ignore[attr-defined,no-any-return]
        return load_named(cls, block_name)
