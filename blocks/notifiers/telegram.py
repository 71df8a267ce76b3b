"""The Telegram notifier block: a bot sends each notice to the admins' chats (httpx)."""

from __future__ import annotations

import os
import random
import re
import time
from typing import Any, ClassVar, Self
from urllib.parse import urlsplit

import httpx
from pydantic import Field, SecretStr, field_validator, model_validator

from blocks.errors import ConfigError
from blocks.notifiers.base import (
    BACKOFF,
    MAX_RATE_LIMIT_WAIT,
    MAX_RETRIES,
    TIMEOUT,
    NotifierBlock,
    NotifyError,
    is_http_url,
    redact,
    retry_after,
)
from blocks.notifiers.message import Notice, telegram_html
from blocks.text import error_line, one_line

TELEGRAM_API_URL = "https://api.telegram.org"

# The bot token's stand-in in the URLs httpx sees, logs and puts into errors.
TOKEN_IN_PATH = "***"  # noqa: S105 - a placeholder, not a secret


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
        if not is_http_url(self.api_url):
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
                        f"Telegram rejected the bot token ({redact(str(exc), token)}): fix "
                        "TELEGRAM_BOT_TOKEN or the block (or its api_url)"
                    ) from None
                except NotifyError as exc:
                    reason = redact(str(exc), token)
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
                reason = error_line(exc)
                raise NotifyError(f"cannot reach Telegram at {host} ({reason})") from None
            status = response.status_code
            data = _json_object(response)
            if status == 200 and data.get("ok") is True:
                return
            description = one_line(str(data.get("description") or response.reason_phrase))
            if status == 429:
                params = data.get("parameters")
                wait = params.get("retry_after") if isinstance(params, dict) else None
                if not isinstance(wait, int):
                    wait = retry_after(response.headers) or 1
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
