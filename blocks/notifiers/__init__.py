"""Slack and Telegram notifications as Prefect blocks, and the notice they both render.

Both blocks implement Prefect's `NotificationBlock.notify(body, subject)`, so automations
can use them, and `send(notice)`, which Slipway's state hooks call with a rich `Notice`.
Rate limits are waited out and transient errors retried; what still fails raises
`NotifyError`, one line that never carries a token or a webhook URL.

`message` renders notices, `slack` and `telegram` deliver them, `base` holds what both share.
"""

from blocks.notifiers.base import NotifierBlock, NotifyError
from blocks.notifiers.message import Notice, slack_message, telegram_html
from blocks.notifiers.slack import SlackNotifier
from blocks.notifiers.telegram import TelegramNotifier

__all__ = [
    "Notice",
    "NotifierBlock",
    "NotifyError",
    "SlackNotifier",
    "TelegramNotifier",
    "slack_message",
    "telegram_html",
]
