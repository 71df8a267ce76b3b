"""How `slipway` fails: every failure is one line on stderr, `error: <what> at <where>: <fix>`.

Usage errors (an unknown option, a bad value, a missing argument) exit with status 2, every
other failure with 1, and none prints a traceback unless -v/--verbose is given. The words
for a library's exception come from `blocks.failures`.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn

import typer

VERBOSE_FLAGS = frozenset({"-v", "--verbose"})


def run_app(app: typer.Typer, args: Sequence[str] | None = None) -> NoReturn:
    """Run the command line and exit; a failure of any kind ends in one line on stderr."""
    args = list(sys.argv[1:] if args is None else args)
    verbose = bool(VERBOSE_FLAGS & set(args[: args.index("--")] if "--" in args else args))
    if not verbose:
        # Prefect's queue services say "Still processing items" while they deliver the last
        # events at exit: progress, not a failure, and not the line a command ends with.
        for service in ("EventsWorker", "APILogWorker"):
            logging.getLogger(service).setLevel(logging.ERROR)
    try:
        status = app(args=args, prog_name="slipway", standalone_mode=False)
    except typer.Abort:
        _exit("aborted", 1)
    except KeyboardInterrupt:
        _exit("interrupted", 130)
    except Exception as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":
            sys.exit(2)  # Click printed the help: `slipway` alone asks for it
        if (click_error := _click_error(exc, _command_path(app, args))) is not None:
            _exit(*click_error)
        from blocks.failures import explain

        if verbose:
            traceback.print_exception(exc)
        _exit(explain(exc), 1)
    if status == 130:  # Typer's word for a KeyboardInterrupt, which it ends silently
        _exit("interrupted", 130)
    sys.exit(status if isinstance(status, int) else 0)


def _command_path(app: typer.Typer, args: Sequence[str]) -> str:
    """`slipway` and the (sub)command names that `args` start with."""
    command, path = typer.main.get_command(app), ["slipway"]
    for arg in args:
        sub = getattr(command, "commands", {}).get(arg)
        if sub is None:
            break
        command = sub
        path.append(arg)
    return " ".join(path)


def _click_error(exc: Exception, command_path: str) -> tuple[str, int] | None:
    """(line, exit status) of an error of Click's own, else None.

    Typer bundles its own Click, whose classes are private: its errors are known by their
    interface (`format_message`, `exit_code`), a usage error by its status, 2.
    """
    format_message = getattr(exc, "format_message", None)
    status = getattr(exc, "exit_code", None)
    if not callable(format_message) or not isinstance(status, int):
        return None
    what = _sentence(str(format_message()))
    if status != 2:
        return f"{what}: check the command line", status
    ctx = getattr(exc, "ctx", None)
    command = getattr(ctx, "command_path", None) or command_path
    return f"{what} at `{command}`: see `{command} --help`", status


def _sentence(text: str) -> str:
    """Click's message as a clause of ours: one line, lowercase start, no final period."""
    from blocks.text import one_line

    flat = one_line(text, None).rstrip(".")
    return flat[:1].lower() + flat[1:]


def _exit(message: str, status: int) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    sys.exit(status)
