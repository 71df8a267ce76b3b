"""Slack and Telegram notifications as Prefect blocks, and the notice they both render.

Both blocks implement Prefect's `NotificationBlock.notify(body, subject)`, so automations
can use them, and `send(notice)`, which Slipway's state hooks call with a rich `Notice`.
Rate limits are waited out and transient errors retried; what still fails raises
`NotifyError`, one line that never carries a token or a webhook URL.
"""

from __future__ import annotations

import asyncio
import html
import logging
import os
import random
import re
import time
from abc import abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal, Self
from urllib.parse import urlsplit

import httpx
from prefect._internal.compatibility.async_dispatch import async_dispatch
from prefect.blocks.abstract import NotificationBlock, NotificationError
from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.http_retry.builtin_interval_calculators import BackoffRetryIntervalCalculator
from slack_sdk.http_retry.handler import RetryHandler
from slack_sdk.http_retry.jitter import Jitter
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web import WebClient
from slack_sdk.webhook import WebhookClient

from blocks.errors import ConfigError, SlipwayError

Level = Literal["success", "failure", "emergency", "info"]
EMOJI: dict[str, str] = {
    "success": "✅",
    "failure": "❌",
    "emergency": "🚨",
    "info": "\u2139\ufe0f",
}
LINK_LABEL = "Open the run in Prefect"

MAX_RETRIES = 3  # after the first attempt, for 5xx answers and connection errors
BACKOFF = 0.25  # seconds, doubled at each retry: 0.25, 0.5, 1
MAX_RATE_LIMIT_WAIT = 30  # seconds; a longer Retry-After fails instead of blocking the hook
TIMEOUT = 10  # seconds per request

SLACK_API_URL = "https://slack.com/api/"
SLACK_HEADER_LIMIT = 150  # Block Kit: header text
SLACK_SECTION_LIMIT = 3000  # Block Kit: section text
SLACK_FIELD_LIMIT = 2000  # Block Kit: each section field
SLACK_MAX_FIELDS = 10  # Block Kit: fields per section
SLACK_MAX_BLOCKS = 50
SHORT_VALUE = 120  # longer or multi-line values get a section of their own

TELEGRAM_API_URL = "https://api.telegram.org"
TELEGRAM_LIMIT = 4096  # characters (UTF-16 code units) after entity parsing
# The bot token's stand-in in the URLs httpx sees, logs and puts into errors.
TOKEN_IN_PATH = "***"  # noqa: S105 - a placeholder, not a secret

# slack-sdk logs request URLs (the webhook's secret) at INFO and DEBUG: its own logger, quieter.
_SDK_LOGGER = logging.getLogger("slipway.notifiers.slack_sdk")
_SDK_LOGGER.setLevel(logging.WARNING)


class NotifyError(SlipwayError, NotificationError):
    """A notification was not delivered; the message names why, without secrets.

    Also a Prefect `NotificationError`, so automations record it as a failed notification.
    """

    def __init__(self, message: str) -> None:
        Exception.__init__(self, message)
        self.log = message


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


def _fit(
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
    header = _fit(f"{notice.emoji} {notice.title}", SLACK_HEADER_LIMIT, str)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": header, "emoji": True}}
    ]
    pending: list[dict[str, str]] = []  # short fields, packed ten to a section
    for label, value in notice.fields:
        if not _is_long(label, value):
            text = _fit(f"*{label}*\n{value}", SLACK_FIELD_LIMIT, _slack_escape)
            pending.append({"type": "mrkdwn", "text": text})
            continue
        blocks += _field_sections(pending)
        pending = []
        head = f"*{_slack_escape(label)}*\n```"
        fence_free = value.replace("```", "'''")
        body = _fit(fence_free, SLACK_SECTION_LIMIT - len(head) - 3, _slack_escape)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"{head}{body}```"}})
    blocks += _field_sections(pending)
    if notice.text:
        text = _fit(notice.text, SLACK_SECTION_LIMIT, _slack_escape)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": text}})
    blocks = blocks[: SLACK_MAX_BLOCKS - 1]
    if notice.link:
        link = f"<{_slack_link(notice.link)}|{LINK_LABEL}>"
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": link}]})
    lines = [f"{notice.emoji} {notice.title}", *(f"{k}: {v}" for k, v in notice.fields)]
    if notice.text:
        lines.append(notice.text)
    return {"text": _fit("\n".join(lines), SLACK_SECTION_LIMIT, _slack_escape), "blocks": blocks}


def _is_long(label: str, value: str) -> bool:
    """Errors and long or multi-line values get a code block of their own."""
    return label.lower() == "error" or "\n" in value or len(value) > SHORT_VALUE


def _field_sections(fields: list[dict[str, str]]) -> list[dict[str, Any]]:
    return [
        {"type": "section", "fields": fields[i : i + SLACK_MAX_FIELDS]}
        for i in range(0, len(fields), SLACK_MAX_FIELDS)
    ]


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _tg_escape(text: str) -> str:
    return html.escape(text, quote=False)


def telegram_html(notice: Notice, limit: int = TELEGRAM_LIMIT) -> str:
    """The notice as Telegram HTML, every value escaped; long values are cut, not the title."""
    values = [v for _, v in notice.fields] + [notice.text or ""]
    escaped = [_tg_escape(v) for v in values]
    title = _fit(notice.title, 512, _tg_escape)
    out = _render_telegram(notice, title, escaped)
    for _ in range(2 * len(escaped) + 2):
        over = _utf16_len(out) - limit
        if over <= 0:
            break
        i = max(range(len(escaped)), key=lambda j: _utf16_len(escaped[j]))
        if escaped[i]:  # cut the longest value (the error, as a rule) by what is too much
            target = _utf16_len(escaped[i]) - over
            escaped[i] = _fit(values[i], target, _tg_escape, _utf16_len) if target > 0 else ""
        else:  # only labels and the title left: not in practice
            title = _fit(notice.title, max(1, _utf16_len(title) - over), _tg_escape, _utf16_len)
        out = _render_telegram(notice, title, escaped)
    return out


def _render_telegram(notice: Notice, title: str, escaped: list[str]) -> str:
    lines = [f"{notice.emoji} <b>{title}</b>"]
    if notice.fields:
        lines.append("")
    for (label, raw), value in zip(notice.fields, escaped, strict=False):
        name = _tg_escape(label)
        if _is_long(label, raw):
            lines.append(f"<b>{name}:</b>\n<pre>{value}</pre>")
        else:
            lines.append(f"<b>{name}:</b> {value}")
    if notice.text and escaped[-1]:
        lines += ["", escaped[-1]]
    if notice.link:
        lines += ["", f'<a href="{html.escape(notice.link, quote=True)}">{LINK_LABEL}</a>']
    return "\n".join(lines)


def _one_line(text: str, limit: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class NotifierBlock(NotificationBlock):
    """What the notifiers share: `send(notice)`, and Prefect's `notify` built on it."""

    @abstractmethod
    def send(self, notice: Notice) -> None:
        """Deliver `notice`; raises `NotifyError` when it could not be delivered."""

    async def anotify(self, body: str, subject: str | None = None) -> None:
        """Prefect's notification API (async): the body as an info notice."""
        await asyncio.to_thread(self.send, _plain_notice(body, subject))

    # Prefect's own notification blocks dispatch the same way: sync callers get the sync
    # implementation, callers in an event loop (automations) a coroutine.
    @async_dispatch(anotify)
    def notify(self, body: str, subject: str | None = None) -> None:  # type: ignore[override]
        """Prefect's notification API: the body as an info notice; raises `NotifyError`."""
        self.send(_plain_notice(body, subject))


def _plain_notice(body: str, subject: str | None) -> Notice:
    return Notice(level="info", title=subject or "Prefect notification", text=body)


def _retry_after(headers: Mapping[str, Any]) -> int | None:
    for key, value in headers.items():
        if key.lower() == "retry-after":
            raw = value[0] if isinstance(value, list) else value
            try:
                return int(raw)
            except (TypeError, ValueError):
                return None
    return None


class _RateLimitHandler(RateLimitErrorRetryHandler):
    """Slack's 429: wait Retry-After (slack-sdk's handler), unless longer than we may wait."""

    def _can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if response is None or response.status_code != 429:
            return False
        wait = _retry_after(response.headers)
        return wait is None or wait <= MAX_RATE_LIMIT_WAIT


class _ServerErrorHandler(ServerErrorRetryHandler):
    """Any 5xx (slack-sdk's handler retries 500 and 503 only; proxies answer 502 and 504)."""

    def _can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        return response is not None and response.status_code >= 500


class _SmallJitter(Jitter):
    def recalculate(self, duration: float) -> float:
        return duration * (1 + random.random() / 10)  # noqa: S311 - not security relevant


def _slack_retry_handlers() -> list[RetryHandler]:
    backoff = BackoffRetryIntervalCalculator(backoff_factor=BACKOFF, jitter=_SmallJitter())
    return [
        _RateLimitHandler(max_retry_count=MAX_RETRIES),
        _ServerErrorHandler(max_retry_count=MAX_RETRIES, interval_calculator=backoff),
        ConnectionErrorRetryHandler(max_retry_count=MAX_RETRIES, interval_calculator=backoff),
    ]


def _is_http_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in {"http", "https"} and bool(parts.hostname)


def _redact(text: str, *secrets: str) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


class SlackNotifier(NotifierBlock):
    """Posts notices to Slack: an incoming webhook, or a bot token and a channel.

    The webhook URL and the bot token are secrets. `base_url` points the bot at another
    Slack-compatible Web API (tests use a simulator); a webhook's URL says where it posts.
    """

    _block_type_name = "Slipway Slack Notifier"
    _block_type_slug = "slipway-slack-notifier"
    _description = "Slack messages on release and backup outcomes (webhook or bot token)."

    webhook_url: SecretStr | None = Field(
        default=None,
        title="Webhook URL",
        description="Incoming webhook URL (https://hooks.slack.com/services/...).",
    )
    bot_token: SecretStr | None = Field(
        default=None, description="Bot token (xoxb-...) with chat:write, instead of a webhook."
    )
    channel: str | None = Field(
        default=None, description="Channel for the bot token: #deploys or its id (C0123...)."
    )
    base_url: str = Field(default=SLACK_API_URL, description="Slack Web API base URL.")

    @model_validator(mode="after")
    def _one_transport(self) -> Self:
        if (self.webhook_url is None) == (self.bot_token is None):
            raise ConfigError(
                "Slack notifier needs either a webhook URL or a bot token with a channel, "
                "not both or neither: set SLACK_WEBHOOK_URL, or SLACK_BOT_TOKEN and SLACK_CHANNEL"
            )
        if self.webhook_url is not None:
            if not _is_http_url(self.webhook_url.get_secret_value()):
                raise ConfigError(
                    "the Slack webhook URL is not an http(s) URL: copy it from the app's "
                    "Incoming Webhooks page (https://hooks.slack.com/services/...)"
                )
            if self.channel:
                raise ConfigError(
                    "a Slack channel applies to a bot token only (a webhook posts to the "
                    "channel it was created for): remove the channel or use a bot token"
                )
        else:
            if not self.channel:
                raise ConfigError(
                    "a Slack bot token needs a channel: set SLACK_CHANNEL (#deploys or C0123...)"
                )
            if not (self.bot_token and self.bot_token.get_secret_value().startswith("xox")):
                raise ConfigError(
                    "the Slack bot token does not look like one (xoxb-...): copy the Bot User "
                    "OAuth Token from the app's OAuth & Permissions page"
                )
        if not _is_http_url(self.base_url):
            raise ConfigError(f"Slack base_url {self.base_url!r} is not an http(s) URL")
        return self

    @classmethod
    def from_env(cls) -> Self | None:
        """SLACK_WEBHOOK_URL, or SLACK_BOT_TOKEN + SLACK_CHANNEL; None when neither is set."""
        webhook = os.environ.get("SLACK_WEBHOOK_URL")
        token = os.environ.get("SLACK_BOT_TOKEN")
        if not webhook and not token:
            return None
        return cls(
            webhook_url=SecretStr(webhook) if webhook else None,
            bot_token=SecretStr(token) if token else None,
            channel=None if webhook else os.environ.get("SLACK_CHANNEL"),
            base_url=os.environ.get("SLACK_API_URL") or SLACK_API_URL,
        )

    def send(self, notice: Notice) -> None:
        """Post `notice`; raises `NotifyError` when Slack did not take it."""
        message = slack_message(notice)
        if self.webhook_url is not None:
            self._post_webhook(self.webhook_url.get_secret_value(), message)
            where = "the webhook's channel"
        else:
            self._post_message(message)
            where = str(self.channel)
        self.logger.info("Slack: sent %r to %s", notice.title, where)

    def _post_webhook(self, url: str, message: dict[str, Any]) -> None:
        client = WebhookClient(
            url, timeout=TIMEOUT, retry_handlers=_slack_retry_handlers(), logger=_SDK_LOGGER
        )
        host = urlsplit(url).hostname
        try:
            response = client.send(
                text=message["text"],
                blocks=message["blocks"],
                unfurl_links=False,
                unfurl_media=False,
            )
        except Exception as exc:  # urllib: refused, timed out, TLS...
            reason = _redact(_one_line(str(exc) or type(exc).__name__), url)
            raise NotifyError(
                f"cannot reach Slack's webhook at {host} ({reason}): check the network"
            ) from None
        status, body = response.status_code, _redact(_one_line(response.body or ""), url)
        if status == 200:
            return
        if status == 429:
            wait = _retry_after(response.headers or {})
            raise NotifyError(f"Slack rate-limits the webhook (retry after {wait} s): try later")
        if status >= 500:
            raise NotifyError(
                f"Slack's webhook still answered HTTP {status} ({body}) after retries: "
                "Slack may be down, try again later"
            )
        if status in {403, 404, 410}:
            raise NotifyError(
                f"Slack does not accept this webhook (HTTP {status} {body}): create a new "
                "incoming webhook and update SLACK_WEBHOOK_URL or the block"
            )
        raise NotifyError(f"Slack refused the message (HTTP {status} {body})")

    def _post_message(self, message: dict[str, Any]) -> None:
        token = self.bot_token.get_secret_value() if self.bot_token else ""
        client = WebClient(
            token=token,
            base_url=self.base_url,
            timeout=TIMEOUT,
            retry_handlers=_slack_retry_handlers(),
            logger=_SDK_LOGGER,
        )
        try:
            client.chat_postMessage(
                channel=str(self.channel),
                text=message["text"],
                blocks=message["blocks"],
                unfurl_links=False,
                unfurl_media=False,
            )
        except SlackApiError as exc:
            raise NotifyError(
                self._api_error(exc.response.status_code, exc.response.data)
            ) from None
        except Exception as exc:  # urllib: refused, timed out, TLS...
            reason = _redact(_one_line(str(exc) or type(exc).__name__), token)
            host = urlsplit(self.base_url).hostname
            raise NotifyError(
                f"cannot reach Slack at {host} ({reason}): check the network"
            ) from None

    def _api_error(self, status: int, data: Any) -> str:
        error = str(data.get("error")) if isinstance(data, dict) else f"HTTP {status}"
        if error in {
            "invalid_auth",
            "not_authed",
            "account_inactive",
            "token_revoked",
            "token_expired",
        }:
            return (
                f"Slack rejected the bot token ({error}): update SLACK_BOT_TOKEN or the block "
                "with the app's Bot User OAuth Token"
            )
        if error in {"channel_not_found", "not_in_channel", "is_archived"}:
            return (
                f"Slack cannot post to {self.channel} ({error}): check SLACK_CHANNEL and "
                "invite the bot to the channel (/invite @bot)"
            )
        if status == 429 or error == "ratelimited":
            return "Slack rate-limits the bot (ratelimited): try later"
        if status >= 500:
            return (
                f"Slack still answered HTTP {status} after retries: "
                "Slack may be down, try again later"
            )
        return f"Slack refused the message ({error})"


class _BotTokenTransport(httpx.HTTPTransport):
    """Puts the bot token into the path as the request leaves.

    httpx logs each request's URL and puts it into some errors; the URL it knows has
    `/bot***/`, so the token is in neither.
    """

    def __init__(self, token: str) -> None:
        super().__init__(retries=0)
        self._token = token.encode()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.raw_path.replace(
            f"/bot{TOKEN_IN_PATH}/".encode(), b"/bot" + self._token + b"/", 1
        )
        real = httpx.Request(
            request.method,
            request.url.copy_with(raw_path=path),
            headers=request.headers,
            stream=request.stream,
            extensions=request.extensions,
        )
        return super().handle_request(real)


class _TokenRejected(Exception):
    pass


class TelegramNotifier(NotifierBlock):
    """Sends notices to Telegram chats through a bot, like the runbooks' admin alerts.

    `chat_ids` takes a list or "123456789,987654321" (ADMIN_TELEGRAM_IDS). Every chat is
    tried; one failing does not stop the others.
    """

    _block_type_name = "Slipway Telegram Notifier"
    _block_type_slug = "slipway-telegram-notifier"
    _description = "Telegram messages to admins on release and backup outcomes."

    bot_token: SecretStr = Field(description="Bot token from @BotFather (123456789:AA...).")
    chat_ids: list[str] = Field(
        description="Chat ids to notify (users, groups: -100...); or comma-separated."
    )
    api_url: str = Field(default=TELEGRAM_API_URL, description="Telegram Bot API base URL.")

    _TOKEN_RE: ClassVar[re.Pattern[str]] = re.compile(r"^\d+:[A-Za-z0-9_-]+$")
    _CHAT_RE: ClassVar[re.Pattern[str]] = re.compile(r"^(-?\d+|@[A-Za-z]\w{3,})$")

    @field_validator("chat_ids", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return _split_ids(value)
        if isinstance(value, list | tuple):
            return [str(v).strip() for v in value if str(v).strip()]
        return value

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not self._TOKEN_RE.match(self.bot_token.get_secret_value()):
            raise ConfigError(
                "the Telegram bot token does not look like 123456789:AA...: copy it from "
                "@BotFather into TELEGRAM_BOT_TOKEN or the block"
            )
        if not self.chat_ids:
            raise ConfigError(
                "no Telegram chat ids: set ADMIN_TELEGRAM_IDS=123456789,987654321 or the block's "
                "chat_ids"
            )
        bad = [c for c in self.chat_ids if not self._CHAT_RE.match(c)]
        if bad:
            raise ConfigError(
                f"Telegram chat ids {', '.join(map(repr, bad))} are not ids: use numbers "
                "(123456789, -100... for groups) or @channelname"
            )
        if not _is_http_url(self.api_url):
            raise ConfigError(f"Telegram api_url {self.api_url!r} is not an http(s) URL")
        return self

    @classmethod
    def from_env(cls) -> Self | None:
        """TELEGRAM_BOT_TOKEN + ADMIN_TELEGRAM_IDS (comma-separated); None when neither is set."""
        token = os.environ.get("TELEGRAM_BOT_TOKEN")
        ids = os.environ.get("ADMIN_TELEGRAM_IDS")
        if not token and not ids:
            return None
        if not token or not ids:
            raise ConfigError(
                "TELEGRAM_BOT_TOKEN and ADMIN_TELEGRAM_IDS go together: set both "
                "(ids comma-separated) or neither"
            )
        return cls(
            bot_token=SecretStr(token),
            chat_ids=_split_ids(ids),
            api_url=os.environ.get("TELEGRAM_API_URL") or TELEGRAM_API_URL,
        )

    def send(self, notice: Notice) -> None:
        """Send `notice` to every chat; raises `NotifyError` naming the chats that failed."""
        text = telegram_html(notice)
        token = self.bot_token.get_secret_value()
        failed: list[str] = []
        with httpx.Client(transport=_BotTokenTransport(token), timeout=TIMEOUT) as client:
            for chat_id in self.chat_ids:
                try:
                    self._send_one(client, chat_id, text)
                except _TokenRejected as exc:
                    raise NotifyError(
                        f"Telegram rejected the bot token ({_redact(str(exc), token)}): fix "
                        "TELEGRAM_BOT_TOKEN or the block (or its api_url)"
                    ) from None
                except NotifyError as exc:
                    reason = _redact(str(exc), token)
                    self.logger.warning("Telegram: chat %s not notified: %s", chat_id, reason)
                    failed.append(f"{chat_id} ({reason})")
        if failed:
            raise NotifyError(
                f"Telegram: {len(failed)} of {len(self.chat_ids)} chats not notified: "
                + "; ".join(failed)
            )
        self.logger.info("Telegram: sent %r to %d chats", notice.title, len(self.chat_ids))

    def _send_one(self, client: httpx.Client, chat_id: str, text: str) -> None:
        url = f"{self.api_url.rstrip('/')}/bot{TOKEN_IN_PATH}/sendMessage"
        payload = {
            "chat_id": chat_id,
            "text": text,
            "parse_mode": "HTML",
            "disable_web_page_preview": True,
        }
        retries = waits = 0
        while True:
            try:
                response = client.post(url, json=payload)
            except httpx.TransportError as exc:
                if retries < MAX_RETRIES:
                    _backoff(retries)
                    retries += 1
                    continue
                host = urlsplit(self.api_url).hostname
                reason = _one_line(str(exc) or type(exc).__name__)
                raise NotifyError(f"cannot reach Telegram at {host} ({reason})") from None
            status = response.status_code
            data = _json_object(response)
            if status == 200 and data.get("ok") is True:
                return
            description = _one_line(str(data.get("description") or response.reason_phrase))
            if status == 429:
                params = data.get("parameters")
                wait = params.get("retry_after") if isinstance(params, dict) else None
                if not isinstance(wait, int):
                    wait = _retry_after(response.headers) or 1
                if wait <= MAX_RATE_LIMIT_WAIT and waits < MAX_RETRIES:
                    time.sleep(wait)
                    waits += 1
                    continue
                raise NotifyError(f"rate-limited by Telegram (retry after {wait} s)")
            if status >= 500:
                if retries < MAX_RETRIES:
                    _backoff(retries)
                    retries += 1
                    continue
                raise NotifyError(
                    f"Telegram answered HTTP {status} ({description}) {retries + 1} times: "
                    "try again later"
                )
            if status in {401, 404}:
                raise _TokenRejected(f"HTTP {status} {description}")
            raise NotifyError(f"{description} (HTTP {status})")


def _split_ids(value: str) -> list[str]:
    return [part.strip() for part in re.split(r"[,\s]+", value) if part.strip()]


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _backoff(retry: int) -> None:
    time.sleep(BACKOFF * 2**retry * (1 + random.random() / 10))  # noqa: S311 - not security relevant
