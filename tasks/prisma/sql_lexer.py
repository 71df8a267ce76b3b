"""Statements that cannot run in a multi-statement migration.sql, found by a small lexer."""

from __future__ import annotations

import re

_LEXEME = re.compile(
    r"""(?P<space>\s+)
      | (?P<line_comment>--[^\n]*)
      | (?P<block_comment>/\*)
      | (?P<escape_string>[eE]'(?:[^'\\]|\\.|'')*'?)
      | (?P<word>[^\W\d][\w$]*)
      | (?P<quoted>"(?:[^"]|"")*"?)
      | (?P<string>'(?:[^']|'')*'?)
      | (?P<dollar>\$(?P<tag>(?:[^\W\d]\w*)?)\$(?s:.*?)(?:\$(?P=tag)\$|\Z))
      | (?P<semicolon>;)
      | (?P<other>.)""",
    re.VERBOSE | re.DOTALL,
)
_COMMENT_EDGE = re.compile(r"/\*|\*/")


def _statements(script: str) -> list[list[str]]:
    """The script's statements, each as its upper-cased bare words (comments, strings,
    quoted identifiers and dollar-quoted bodies skipped), the way PostgreSQL splits them."""
    statements: list[list[str]] = []
    words: list[str] = []
    nonempty = False
    pos = 0
    while pos < len(script):
        match = _LEXEME.match(script, pos)
        assert match is not None  # `other` matches any character
        kind, pos = match.lastgroup, match.end()
        if kind == "block_comment":  # PostgreSQL's block comments nest
            depth = 1
            while depth and (edge := _COMMENT_EDGE.search(script, pos)):
                depth += 1 if edge.group() == "/*" else -1
                pos = edge.end()
            if depth:
                pos = len(script)
        elif kind == "semicolon":
            if nonempty:
                statements.append(words)
            words, nonempty = [], False
        elif kind not in ("space", "line_comment"):
            nonempty = True
            if kind == "word":
                words.append(match.group().upper())
    if nonempty:
        statements.append(words)
    return statements


def _refuses_transaction(words: list[str]) -> str | None:
    head = words[:4]
    if head[:1] == ["CREATE"] and "INDEX" in head[1:3] and "CONCURRENTLY" in head[2:4]:
        return "CREATE INDEX CONCURRENTLY"
    if head[:3] == ["DROP", "INDEX", "CONCURRENTLY"]:
        return "DROP INDEX CONCURRENTLY"
    if head[:1] == ["REINDEX"] and "CONCURRENTLY" in words[:6]:
        return "REINDEX CONCURRENTLY"
    if head[:2] == ["ALTER", "TABLE"] and "DETACH" in words and words[-1] == "CONCURRENTLY":
        return "DETACH PARTITION CONCURRENTLY"
    if head[:1] == ["VACUUM"]:
        return "VACUUM"
    for pair in (("CREATE", "DATABASE"), ("DROP", "DATABASE"), ("ALTER", "SYSTEM")):
        if tuple(head[:2]) == pair:
            return " ".join(pair)
    if head[:2] in (["CREATE", "TABLESPACE"], ["DROP", "TABLESPACE"]):
        return " ".join(head[:2])
    return None


def script_problem(script: str) -> str | None:
    """Why PostgreSQL would reject this migration.sql as one script, or None."""
    statements = _statements(script)
    if len(statements) < 2:
        return None
    for words in statements:
        what = _refuses_transaction(words)
        if what:
            return (
                f"{what} cannot run inside a transaction block, and PostgreSQL runs a "
                f"migration.sql of {len(statements)} statements as one transaction (so does "
                "Prisma): move it into a migration of its own, as its only statement"
            )
    return None
