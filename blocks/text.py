"""Text for one-line messages."""

from __future__ import annotations


def one_line(text: str, limit: int | None = 200) -> str:
    """`text` with its whitespace (newlines too) collapsed, cut to `limit` with an ellipsis."""
    flat = " ".join(text.split())
    return flat if limit is None or len(flat) <= limit else flat[: limit - 1] + "…"


def error_line(exc: BaseException, limit: int | None = 200) -> str:
    """An exception's message as `one_line`, or its type's name when it says nothing."""
    return one_line(str(exc), limit) or type(exc).__name__
