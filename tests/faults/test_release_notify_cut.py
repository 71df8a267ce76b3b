"""A long error of characters that need escaping keeps its start.

Sent through the real notifier blocks to the Slack and Telegram simulators, which parse
what arrives as the APIs do (Telegram's HTML parser, Slack's Block Kit limits).
"""

from __future__ import annotations

import pytest

from blocks.notifiers import Notice
from tests.chat_simulators import SlackSimulator, TelegramSimulator
from tests.test_notifiers import bot_notifier, telegram_notifier, webhook_notifier

# Every character escapes to four or five: escaped, this is far over both limits.
START = "pg_restore failed: "
ERROR = START + "<&>" * 3000


def notice(error: str = ERROR) -> Notice:
    return Notice(
        level="failure",
        title="release FAILED on production",
        fields=[("Environment", "production"), ("Error", error)],
        text=error,
    )


@pytest.mark.parametrize("transport", ["webhook", "bot"])
def test_slack_keeps_the_start_of_a_long_escaped_error(
    slack: SlackSimulator, transport: str
) -> None:
    notifier = webhook_notifier(slack) if transport == "webhook" else bot_notifier(slack)
    notifier.send(notice())

    [message] = slack.messages
    shown = message.visible_text()
    # The error's section and the free text both start as the error does, then are cut.
    assert shown.count(START + "<&><&>") == 2, shown[:300]
    assert "…" in shown
    assert message.text is not None
    assert START + "<&>" in message.text.replace("&lt;", "<").replace("&gt;", ">").replace(
        "&amp;", "&"
    )


def test_telegram_keeps_the_start_of_a_long_escaped_error(telegram: TelegramSimulator) -> None:
    telegram_notifier(telegram).send(notice())

    assert len(telegram.messages) == 2
    for message in telegram.messages:
        assert START + "<&><&>" in message.text, message.text[:300]
        assert "…" in message.text
        assert len(message.text.encode("utf-16-le")) // 2 <= 4096


def test_a_cut_never_splits_an_entity(telegram: TelegramSimulator) -> None:
    # Each length puts the cut at another place inside "&amp;", "&lt;" or "&gt;": the
    # simulator's HTML parser refuses a broken entity, as Telegram does.
    for pad in range(6):
        telegram.messages.clear()
        telegram_notifier(telegram, telegram.chat_ids[0]).send(
            notice(START + "x" * pad + "<&>" * 2000)
        )
        [message] = telegram.messages
        assert message.text.count(START + "x" * pad + "<&>") == 1
