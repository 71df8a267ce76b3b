"""How the `slipway` command line presents itself: flags shown as flags.

Typer's rich help prints every option's type, a flag's too (`--yes <bool>`, `--help <bool>`),
as if it took a value, while `--yes true` is refused. An empty metavar leaves a flag's type
column blank. Every `slipway` app is a `SlipwayTyper`, so every command gets this.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import typer
from typer.core import TyperCommand, TyperGroup, TyperOption

F = TypeVar("F", bound=Callable[..., Any])


def _as_flag(param: object) -> None:
    if isinstance(param, TyperOption) and (param.is_flag or param.count) and not param.metavar:
        param.metavar = ""


class SlipwayCommand(TyperCommand):
    """A command whose flags, --help included, show no value type."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            _as_flag(param)

    def get_help_option(self, ctx: Any) -> TyperOption | None:
        option = super().get_help_option(ctx)
        _as_flag(option)
        return option


class SlipwayGroup(TyperGroup):
    """A command group whose --help shows no value type."""

    def get_help_option(self, ctx: Any) -> TyperOption | None:
        option = super().get_help_option(ctx)
        _as_flag(option)
        return option


class SlipwayTyper(typer.Typer):
    """`typer.Typer` whose groups and commands show flags as flags."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("cls", SlipwayGroup)
        super().__init__(**kwargs)

    def command(self, name: str | None = None, **kwargs: Any) -> Callable[[F], F]:
        kwargs.setdefault("cls", SlipwayCommand)
        return super().command(name, **kwargs)
