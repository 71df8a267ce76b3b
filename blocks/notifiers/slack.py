"""The Slack notifier block: an incoming webhook, or a bot token and a channel (slack-sdk)."""

from __future__ import annotations

import logging
import os
import random
from typing import Any, Self
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, model_validator
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
from blocks.notifiers.message import Notice, slack_message
from blocks.text import error_line, one_line

SLACK_API_URL = "https://slack.com/api/"

# slack-sdk logs request URLs (the webhook's secret) at INFO and DEBUG: its own logger, quieter.
_SDK_LOGGER = logging.getLogger("slipway.notifiers.slack_sdk")
_SDK_LOGGER.setLevel(logging.WARNING)


class _StatusRule:
    """Retries by the response's status alone, as `_retries` says."""

    def _can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        return response is not None and self._retries(response)

    def _retries(self, response: HttpResponse) -> bool:
        raise NotImplementedError


class _RateLimitHandler(_StatusRule, RateLimitErrorRetryHandler):
    """Slack's 429: wait Retry-After (slack-sdk's handler), unless longer than we may wait."""

    def _retries(self, response: HttpResponse) -> bool:
        if response.status_code != 429:
            return False
        wait = retry_after(response.headers)
        return wait is None or wait <= MAX_RATE_LIMIT_WAIT


class _ServerErrorHandler(_StatusRule, ServerErrorRetryHandler):
    """Any 5xx (slack-sdk's handler retries 500 and 503 only; proxies answer 502 and 504)."""

    def _retries(self, response: HttpResponse) -> bool:
        return response.status_code >= 500


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
            if not is_http_url(self.webhook_url.get_secret_value()):
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
        if not is_http_url(self.base_url):
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
            reason = redact(error_line(exc), url)
            raise NotifyError(
                f"cannot reach Slack's webhook at {host} ({reason}): check the network"
            ) from None
        status, body = response.status_code, redact(one_line(response.body or ""), url)
        if status == 200:
            return
        if status == 429:
            wait = retry_after(response.headers or {})
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
            reason = redact(error_line(exc), token)
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
