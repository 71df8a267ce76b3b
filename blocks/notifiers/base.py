"""What the notifier blocks share: `NotifyError`, the block base with Prefect's `notify`, and
the retry limits and small helpers of both transports."""

from __future__ import annotations

import asyncio
from abc import abstractmethod
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from prefect._internal.compatibility.async_dispatch import async_dispatch
from prefect.blocks.abstract import NotificationBlock, NotificationError

from blocks.errors import SlipwayError
from blocks.notifiers.message import Notice

MAX_RETRIES = 3  # after the first attempt, for 5xx answers and connection errors
BACKOFF = 0.25  # seconds, doubled at each retry: 0.25, 0.5, 1
MAX_RATE_LIMIT_WAIT = 30  # seconds; a longer Retry-After fails instead of blocking the hook
TIMEOUT = 10  # seconds per request


class NotifyError(SlipwayError, NotificationError):
    """A notification was not delivered; the message names why, without secrets.

    Also a Prefect `NotificationError`, so automations record it as a failed notification.
    """

    def __init__(self, message: str) -> None:
        Exception.__init__(self, message)
        self.log = message


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


def retry_after(headers: Mapping[str, Any]) -> int | None:
    for key, value in headers.items():
        if key.lower() == "retry-after":
            raw = value[0] if isinstance(value, list) else value
            try:
                return int(raw)
            except (TypeError, ValueError):
                return None
    return None


def is_http_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in {"http", "https"} and bool(parts.hostname)


def redact(text: str, *secrets: str) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
