"""The notice both chats render, and its rendering: Slack Block Kit and Telegram HTML.

Every value is escaped for its chat and cut to the chat's limits (`fit`), never the title first.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

Level = Literal["success", "failure", "emergency", "info"]
EMOJI: dict[str, str] = {
    "success": "✅",
    "failure": "❌",
    "emergency": "🚨",
    "info": "\u2139\ufe0f",
}
LINK_LABEL = "Open the run in Prefect"

SLACK_HEADER_LIMIT = 150  # Block Kit: header text
SLACK_SECTION_LIMIT = 3000  # Block Kit: section text
SLACK_FIELD_LIMIT = 2000  # Block Kit: each section field
SLACK_MAX_FIELDS = 10  # Block Kit: fields per section
SLACK_MAX_BLOCKS = 50
SHORT_VALUE = 120  # longer or multi-line values get a section of their own

TELEGRAM_LIMIT = 4096  # characters (UTF-16 code units) after entity parsing


class Notice(BaseModel):
    """What happened, in the shape both chats render: a title, ordered fields, a link."""

    level: Level = "info"
    title: str
    fields: list[tuple[str, str]] = Field(
        default_factory=list,
        description='Ordered (label, value) pairs: "Flow", "Environment", "Version", "Error"...',
    )
    link: str | None = Field(default=None, description="The run's page in Prefect's UI.")
    text: str | None = Field(default=None, description="Free text after the fields.")

    @field_validator("fields", mode="before")
    @classmethod
    def _pairs(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return [(str(k), str(v)) for k, v in value.items()]
        return value

    @property
    def emoji(self) -> str:
        return EMOJI[self.level]


def fit(
    raw: str, limit: int, escape: Callable[[str], str], size: Callable[[str], int] = len
) -> str:
    """`escape(raw)`, its end cut with an ellipsis so its size is at most `limit`.

    The cut is made in the escaped text (cutting the raw text by how much the escaped one
    is over would drop too much when escaping multiplies its length), and never inside an
    entity such as `&amp;`: the start of the text is what people need.
    """
    out = escape(raw)
    if size(out) <= limit:
        return out
    budget = limit - size("…")
    keep = min(len(out), max(0, budget))
    while keep > 0 and size(out[:keep]) > budget:
        keep -= max(1, (size(out[:keep]) - budget) // 2)
    head = out[: max(0, keep)]
    amp = head.rfind("&")
    if amp > head.rfind(";") and escape("&") != "&":
        head = head[:amp]  # a cut entity: drop its start
    return head + "…"


def _slack_escape(text: str) -> str:
    # Slack's control characters; everything else is literal in mrkdwn.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _slack_link(url: str) -> str:
    return _slack_escape(url).replace("|", "%7C")


def slack_message(notice: Notice) -> dict[str, Any]:
    """Block Kit blocks plus the plain `text` Slack shows in notifications."""
    header = fit(f"{notice.emoji} {notice.title}", SLACK_HEADER_LIMIT, str)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": header, "emoji": True}}
    ]
    pending: list[dict[str, str]] = []  # short fields, packed ten to a section
    for label, value in notice.fields:
        if not is_long(label, value):
            text = fit(f"*{label}*\n{value}", SLACK_FIELD_LIMIT, _slack_escape)
            pending.append({"type": "mrkdwn", "text": text})
            continue
        blocks += _field_sections(pending)
        pending = []
        head = f"*{_slack_escape(label)}*\n```"
        fence_free = value.replace("```", "'''")
        body = fit(fence_free, SLACK_SECTION_LIMIT - len(head) - 3, _slack_escape)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"{head}{body}```"}})
    blocks += _field_sections(pending)
    if notice.text:
        text = fit(notice.text, SLACK_SECTION_LIMIT, _slack_escape)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": text}})
    blocks = blocks[: SLACK_MAX_BLOCKS - 1]
    if notice.link:
        link = f"<{_slack_link(notice.link)}|{LINK_LABEL}>"
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": link}]})
    lines = [f"{notice.emoji} {notice.title}", *(f"{k}: {v}" for k, v in notice.fields)]
    if notice.text:
        lines.append(notice.text)
    return {"text": fit("\n".join(lines), SLACK_SECTION_LIMIT, _slack_escape), "blocks": blocks}


def is_long(label: str, value: str) -> bool:
    """Errors and long or multi-line values get a code block of their own."""
    return label.lower() == "error" or "\n" in value or len(value) > SHORT_VALUE


def _field_sections(fields: list[dict[str, str]]) -> list[dict[str, Any]]:
    return [
        {"type": "section", "fields": fields[i : i + SLACK_MAX_FIELDS]}
        for i in range(0, len(fields), SLACK_MAX_FIELDS)
    ]


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _tg_escape(text: str) -> str:
    return html.escape(text, quote=False)


def telegram_html(notice: Notice, limit: int = TELEGRAM_LIMIT) -> str:
    """The notice as Telegram HTML, every value escaped; long values are cut, not the title."""
    values = [v for _, v in notice.fields] + [notice.text or ""]
    escaped = [_tg_escape(v) for v in values]
    title = fit(notice.title, 512, _tg_escape)
    out = _render_telegram(notice, title, escaped)
    for _ in range(2 * len(escaped) + 2):
        over = utf16_len(out) - limit
        if over <= 0:
            break
        i = max(range(len(escaped)), key=lambda j: utf16_len(escaped[j]))
        if escaped[i]:  # cut the longest value (the error, as a rule) by what is too much
            target = utf16_len(escaped[i]) - over
            escaped[i] = fit(values[i], target, _tg_escape, utf16_len) if target > 0 else ""
        else:  # only labels and the title left: not in practice
            title = fit(notice.title, max(1, utf16_len(title) - over), _tg_escape, utf16_len)
        out = _render_telegram(notice, title, escaped)
    return out


def _render_telegram(notice: Notice, title: str, escaped: list[str]) -> str:
    lines = [f"{notice.emoji} <b>{title}</b>"]
    if notice.fields:
        lines.append("")
    for (label, raw), value in zip(notice.fields, escaped, strict=False):
        name = _tg_escape(label)
        if is_long(label, raw):
            lines.append(f"<b>{name}:</b>\n<pre>{value}</pre>")
        else:
            lines.append(f"<b>{name}:</b> {value}")
    if notice.text and escaped[-1]:
        lines += ["", escaped[-1]]
    if notice.link:
        lines += ["", f'<a href="{html.escape(notice.link, quote=True)}">{LINK_LABEL}</a>']
    return "\n".join(lines)
