"""Slack and Telegram notifiers against HTTP-level simulators of both public APIs.

What arrives is checked as the simulators received and parsed it (Telegram's HTML parser
rejects what is badly escaped; Slack's Block Kit limits are enforced), and failures must
come back as one line that carries no token or webhook secret.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import uuid
from typing import Any

import httpx
import pytest
from prefect.blocks.abstract import NotificationError
from pydantic import SecretStr

from blocks.errors import ConfigError
from blocks.notifiers import Notice, NotifierBlock, NotifyError, SlackNotifier, TelegramNotifier
from tests.chat_simulators import SlackSimulator, TelegramSimulator
from tests.harness.procs import free_port

LINK = "http://127.0.0.1:4200/runs/flow-run/0b9f7a52-1c1e-4c8f-9a49-2d3c8d6b1f00?tab=logs&x=1"
ERROR = 'P3009: migrate found failed migrations: <20260101_add_index> & "more" > 0'
BASE = [("Flow", "release"), ("Environment", "production")]
NOTICES = {
    "success": Notice(
        level="success",
        title="release succeeded on production",
        fields=[*BASE, ("Version", "v1.4.2"), ("Duration", "3 min 12 s")],
        link=LINK,
    ),
    "failure": Notice(
        level="failure",
        title="release FAILED on production",
        fields=[
            *BASE,
            ("Version", "v1.4.2"),
            ("Duration", "48 s"),
            ("Failed step", "migrate"),
            ("Error", ERROR),
        ],
        link=LINK,
    ),
    "emergency": Notice(
        level="emergency",
        title="rollback FAILED on production",
        fields=[
            ("Flow", "rollback"),
            ("Environment", "production"),
            ("Version", "v1.4.1"),
            ("Duration", "2 min 05 s"),
            ("Error", "restore of backup 20261122T010000Z failed:\npg_restore: error <x> & y"),
            ("Next step", "act now: the environment may not be on a known version"),
        ],
        link=LINK,
    ),
}
EMOJI = {"success": "✅", "failure": "❌", "emergency": "🚨"}
INFO = "\u2139\ufe0f"  # the info emoji
FAILURE = NOTICES["failure"]


def webhook_notifier(slack: SlackSimulator) -> SlackNotifier:
    return SlackNotifier(webhook_url=SecretStr(slack.webhook_url))


def bot_notifier(slack: SlackSimulator, channel: str = "#deploys") -> SlackNotifier:
    return SlackNotifier(
        bot_token=SecretStr(slack.bot_token), channel=channel, base_url=slack.api_url
    )


def telegram_notifier(telegram: TelegramSimulator, *chat_ids: str) -> TelegramNotifier:
    return TelegramNotifier(
        bot_token=SecretStr(telegram.bot_token),
        chat_ids=list(chat_ids or telegram.chat_ids),
        api_url=telegram.api_url,
    )


def assert_one_clean_line(message: str, *secrets: str) -> None:
    assert message
    assert "\n" not in message
    for secret in secrets:
        assert secret not in message


@pytest.mark.parametrize("level", ["success", "failure", "emergency"])
@pytest.mark.parametrize("transport", ["webhook", "bot"])
def test_slack_message_has_the_notice(slack: SlackSimulator, level: str, transport: str) -> None:
    notice = NOTICES[level]
    notifier = webhook_notifier(slack) if transport == "webhook" else bot_notifier(slack)
    notifier.send(notice)

    [message] = slack.messages
    assert message.via == ("webhook" if transport == "webhook" else "api")
    assert message.channel == SlackSimulator.CHANNEL_ID
    assert message.header() == f"{EMOJI[level]} {notice.title}"
    shown = message.visible_text()
    for label, value in notice.fields:
        assert f"*{label}*" in shown
        assert value in shown  # the error too, its <, & and > intact
    assert message.links() == [LINK]
    assert message.text
    assert message.text.startswith(f"{EMOJI[level]} {notice.title}")


@pytest.mark.parametrize("level", ["success", "failure", "emergency"])
def test_telegram_message_reaches_every_chat(telegram: TelegramSimulator, level: str) -> None:
    notice = NOTICES[level]
    telegram_notifier(telegram).send(notice)

    assert [m.chat_id for m in telegram.messages] == ["111111111", "222222222"]
    for message in telegram.messages:
        assert message.text.startswith(f"{EMOJI[level]} {notice.title}\n")
        assert f"{notice.title}" in message.bold()
        for label, value in notice.fields:
            assert f"{label}:" in message.text
            assert value in message.text  # escaped on the way, intact on arrival
        assert message.links() == [LINK]
        assert message.payload["parse_mode"] == "HTML"
        assert message.payload["disable_web_page_preview"] is True


def test_the_telegram_simulator_rejects_unescaped_html(telegram: TelegramSimulator) -> None:
    # What makes the escaping checks above meaningful: the raw error is not valid HTML.
    response = httpx.post(
        f"{telegram.api_url}/bot{telegram.bot_token}/sendMessage",
        json={"chat_id": "111111111", "text": f"<b>Error:</b> {ERROR}", "parse_mode": "HTML"},
    )
    assert response.status_code == 400
    assert response.json()["description"].startswith("Bad Request: can't parse entities:")
    assert telegram.messages == []


def test_long_errors_are_cut_to_the_apis_limits(
    slack: SlackSimulator, telegram: TelegramSimulator
) -> None:
    error = "relation <users> & more: " + "x" * 9000 + " THE END"
    notice = FAILURE.model_copy(update={"fields": [*BASE, ("Error", error)]})
    webhook_notifier(slack).send(notice)
    telegram_notifier(telegram, "111111111").send(notice)

    [tg] = telegram.messages
    assert tg.text.startswith(f"❌ {notice.title}\n")  # the header is whole
    assert "relation <users> & more: xxx" in tg.text
    assert "THE END" not in tg.text
    assert "…" in tg.text
    assert tg.links() == [LINK]
    [sl] = slack.messages  # the simulator enforces Block Kit's limits
    assert sl.header() == f"❌ {notice.title}"
    assert "relation <users> & more: xxx" in sl.visible_text()
    assert "THE END" not in sl.visible_text()


def test_slack_429_waits_retry_after_and_posts_once(slack: SlackSimulator) -> None:
    slack.fail_next(1, status=429, retry_after=1)
    webhook_notifier(slack).send(FAILURE)
    # A retry before Retry-After had passed would have been answered 429 again.
    assert slack.statuses == [429, 200]
    assert len(slack.messages) == 1


def test_telegram_429_waits_retry_after_and_sends_once(telegram: TelegramSimulator) -> None:
    telegram.fail_next(1, status=429, retry_after=1)
    telegram_notifier(telegram).send(FAILURE)
    assert telegram.statuses == [429, 200, 200]
    assert [m.chat_id for m in telegram.messages] == ["111111111", "222222222"]


def _transport(
    kind: str, slack: SlackSimulator, telegram: TelegramSimulator
) -> tuple[NotifierBlock, SlackSimulator | TelegramSimulator, str]:
    """A notifier, the simulator it talks to, and its secret."""
    if kind == "webhook":
        return webhook_notifier(slack), slack, slack.webhook_secret
    if kind == "bot":
        return bot_notifier(slack), slack, slack.bot_token
    return telegram_notifier(telegram, "111111111"), telegram, telegram.bot_token


@pytest.mark.parametrize("kind", ["webhook", "bot", "telegram"])
def test_server_errors_are_retried(
    slack: SlackSimulator, telegram: TelegramSimulator, kind: str
) -> None:
    notifier, sim, _ = _transport(kind, slack, telegram)
    sim.fail_next(2, status=500)
    notifier.send(FAILURE)
    assert sim.statuses == [500, 500, 200]
    assert len(sim.messages) == 1


@pytest.mark.parametrize("kind", ["webhook", "bot", "telegram"])
def test_persistent_server_errors_raise_one_clean_line(
    slack: SlackSimulator,
    telegram: TelegramSimulator,
    kind: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    notifier, sim, secret = _transport(kind, slack, telegram)
    sim.fail_next(10, status=503)
    with pytest.raises(NotifyError) as info:
        notifier.send(FAILURE)
    assert_one_clean_line(str(info.value), secret)
    assert "503" in str(info.value)
    assert sim.statuses == [503] * 4  # the first attempt and three retries
    assert sim.messages == []
    assert secret not in caplog.text


def test_telegram_token_stays_out_of_httpx_logs(
    telegram: TelegramSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    telegram_notifier(telegram).send(NOTICES["success"])
    assert len(telegram.messages) == 2
    assert "/bot***/sendMessage" in caplog.text  # httpx did log each request's URL
    assert telegram.bot_token not in caplog.text


def test_wrong_telegram_token_is_one_line_without_the_token(telegram: TelegramSimulator) -> None:
    wrong = "7000000001:AA" + "w" * 33
    notifier = TelegramNotifier(
        bot_token=SecretStr(wrong), chat_ids=["111111111", "222222222"], api_url=telegram.api_url
    )
    with pytest.raises(NotifyError) as info:
        notifier.send(FAILURE)
    message = str(info.value)
    assert_one_clean_line(message, wrong, wrong.split(":")[1])
    assert "rejected the bot token" in message
    assert "TELEGRAM_BOT_TOKEN" in message
    assert telegram.statuses == [401]  # no retry, and no use trying the other chat
    assert telegram.messages == []


def test_one_telegram_chat_failing_does_not_stop_the_others(telegram: TelegramSimulator) -> None:
    notifier = telegram_notifier(telegram, "111111111", "999999999", "222222222")
    with pytest.raises(NotifyError) as info:
        notifier.send(FAILURE)
    message = str(info.value)
    assert_one_clean_line(message, telegram.bot_token)
    assert "999999999" in message
    assert "chat not found" in message
    assert "111111111" not in message
    assert [m.chat_id for m in telegram.messages] == ["111111111", "222222222"]


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("wrong webhook", "create a new incoming webhook"),
        ("wrong bot token", "rejected the bot token (invalid_auth)"),
        ("unknown channel", "channel_not_found"),
    ],
)
def test_slack_refusals_are_one_line_without_secrets(
    slack: SlackSimulator, setup: str, expected: str
) -> None:
    if setup == "wrong webhook":
        secret = "0" * 24
        notifier = SlackNotifier(webhook_url=SecretStr(slack.webhook_url[:-24] + secret))
    elif setup == "wrong bot token":
        secret = "xoxb-1-wrongwrongwrong"  # noqa: S105 - a wrong token, on purpose
        notifier = SlackNotifier(
            bot_token=SecretStr(secret), channel="#deploys", base_url=slack.api_url
        )
    else:
        secret = slack.bot_token
        notifier = bot_notifier(slack, channel="#nowhere")
    with pytest.raises(NotifyError) as info:
        notifier.send(FAILURE)
    assert_one_clean_line(str(info.value), secret, slack.webhook_secret)
    assert expected in str(info.value)
    assert len(slack.requests) == 1  # refusals are not retried
    assert slack.messages == []


@pytest.mark.parametrize("kind", ["webhook", "telegram"])
def test_unreachable_api_is_one_line_without_secrets(kind: str) -> None:
    base = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    secret = "7000000001:AA" + "s" * 33 if kind == "telegram" else "S" * 24
    notifier: NotifierBlock
    if kind == "telegram":
        notifier = TelegramNotifier(bot_token=SecretStr(secret), chat_ids=["1"], api_url=base)
    else:
        notifier = SlackNotifier(webhook_url=SecretStr(f"{base}/services/T1/B1/{secret}"))
    with pytest.raises(NotifyError) as info:
        notifier.send(FAILURE)
    assert_one_clean_line(str(info.value), secret)
    assert "cannot reach" in str(info.value)
    assert "127.0.0.1" in str(info.value)


def test_notify_works_as_prefect_calls_it(
    slack: SlackSimulator, telegram: TelegramSimulator
) -> None:
    # Sync callers (flows, scripts), as in Prefect's docs: block.notify("...").
    webhook_notifier(slack).notify("Nightly backup verified & pruned.", "Backup <ok>")
    telegram_notifier(telegram, "111111111").notify("Nightly backup verified & pruned.")

    # Automations, in the server's event loop: `await block.notify(subject=..., body=...)`.
    async def automation(block: NotifierBlock) -> None:
        with block.raise_on_failure():
            pending = block.notify(subject="Flow run failed", body="release <a> & b")
            assert inspect.isawaitable(pending)  # in an event loop, notify is async
            await pending

    asyncio.run(automation(bot_notifier(slack)))
    asyncio.run(automation(telegram_notifier(telegram, "222222222")))

    first, second = slack.messages
    assert first.header() == f"{INFO} Backup <ok>"
    assert "Nightly backup verified & pruned." in first.visible_text()
    assert second.header() == f"{INFO} Flow run failed"
    assert "release <a> & b" in second.visible_text()
    tg_first, tg_second = telegram.messages
    assert tg_first.text == f"{INFO} Prefect notification\n\nNightly backup verified & pruned."
    assert tg_second.text == f"{INFO} Flow run failed\n\nrelease <a> & b"


def test_notify_failure_is_a_prefect_notification_error(slack: SlackSimulator) -> None:
    notifier = bot_notifier(slack, channel="#nowhere")

    async def automation() -> None:
        with notifier.raise_on_failure():
            pending = notifier.notify(subject="s", body="b")
            assert inspect.isawaitable(pending)
            await pending

    with pytest.raises(NotificationError) as info:
        asyncio.run(automation())
    assert "channel_not_found" in info.value.log  # what Prefect records for the action
    assert isinstance(info.value, NotifyError)


@pytest.mark.parametrize(
    ("cls", "kwargs", "expected"),
    [
        (SlackNotifier, {}, "either a webhook URL or a bot token"),
        (
            SlackNotifier,
            {
                "webhook_url": "https://hooks.slack.com/services/T/B/sekret",
                "bot_token": "xoxb-sekret",
            },
            "not both",
        ),
        (SlackNotifier, {"bot_token": "xoxb-sekret"}, "needs a channel"),
        (SlackNotifier, {"bot_token": "sekret", "channel": "#deploys"}, "xoxb-"),
        (SlackNotifier, {"webhook_url": "hooks.slack.com/sekret"}, "not an http(s) URL"),
        (
            SlackNotifier,
            {"webhook_url": "https://hooks.slack.com/services/sekret", "channel": "#x"},
            "remove the channel",
        ),
        (TelegramNotifier, {"bot_token": "sekret", "chat_ids": "1"}, "@BotFather"),
        (TelegramNotifier, {"bot_token": "1:sekret", "chat_ids": " , "}, "ADMIN_TELEGRAM_IDS"),
        (TelegramNotifier, {"bot_token": "1:sekret", "chat_ids": "12,admin"}, "'admin'"),
    ],
)
def test_bad_configuration_is_a_one_line_config_error(
    cls: type[NotifierBlock], kwargs: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        cls(**kwargs)
    assert_one_clean_line(str(info.value), "sekret")
    assert expected in str(info.value)


def test_from_env_reads_the_runbooks_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "SLACK_WEBHOOK_URL",
        "SLACK_BOT_TOKEN",
        "SLACK_CHANNEL",
        "SLACK_API_URL",
        "TELEGRAM_BOT_TOKEN",
        "ADMIN_TELEGRAM_IDS",
        "TELEGRAM_API_URL",
    ):
        monkeypatch.delenv(name, raising=False)
    assert SlackNotifier.from_env() is None
    assert TelegramNotifier.from_env() is None

    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-1-abc")
    monkeypatch.setenv("SLACK_CHANNEL", "#deploys")
    slack = SlackNotifier.from_env()
    assert slack is not None
    assert slack.channel == "#deploys"
    assert slack.webhook_url is None
    monkeypatch.setenv("SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/T/B/X")
    with pytest.raises(ConfigError, match="not both"):
        SlackNotifier.from_env()

    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "123456789:AAabc")
    with pytest.raises(ConfigError, match="go together"):
        TelegramNotifier.from_env()
    monkeypatch.setenv("ADMIN_TELEGRAM_IDS", "123456789,987654321")
    tg = TelegramNotifier.from_env()
    assert tg is not None
    assert tg.chat_ids == ["123456789", "987654321"]
    assert tg.bot_token.get_secret_value() == "123456789:AAabc"


def test_secrets_are_secret_fields(slack: SlackSimulator, telegram: TelegramSimulator) -> None:
    for block, secret in (
        (webhook_notifier(slack), slack.webhook_secret),
        (bot_notifier(slack), slack.bot_token),
        (telegram_notifier(telegram), telegram.bot_token),
    ):
        assert secret not in repr(block)
        assert secret not in str(block)
    assert isinstance(webhook_notifier(slack).webhook_url, SecretStr)
    assert SlackNotifier.model_json_schema()["secret_fields"] == ["webhook_url", "bot_token"]
    assert TelegramNotifier.model_json_schema()["secret_fields"] == ["bot_token"]
    assert SlackNotifier.get_block_type_slug() == "slipway-slack-notifier"
    assert "notify" in TelegramNotifier.get_block_capabilities()


@pytest.mark.prefect
def test_blocks_round_trip_through_prefect(
    prefect_server: Any, slack: SlackSimulator, telegram: TelegramSimulator
) -> None:
    from prefect.client.orchestration import get_client

    name = f"test-{uuid.uuid4().hex[:8]}"
    webhook_notifier(slack).save(name)
    telegram_notifier(telegram).save(name)

    slack_block = SlackNotifier.load(name)
    tg_block = TelegramNotifier.load(name)
    assert isinstance(slack_block, SlackNotifier)
    assert isinstance(tg_block, TelegramNotifier)
    assert isinstance(slack_block.webhook_url, SecretStr)
    assert isinstance(tg_block.bot_token, SecretStr)
    assert tg_block.chat_ids == list(telegram.chat_ids)
    slack_block.send(FAILURE)
    tg_block.send(FAILURE)
    assert len(slack.messages) == 1
    assert len(telegram.messages) == 2

    # Stored as secrets: the API shows them only to those who ask for secrets.
    with get_client(sync_client=True) as client:
        for slug, key, secret in (
            ("slipway-slack-notifier", "webhook_url", slack.webhook_url),
            ("slipway-telegram-notifier", "bot_token", telegram.bot_token),
        ):
            doc = client.read_block_document_by_name(name, slug, include_secrets=False)
            assert doc.data[key] != secret
            assert secret not in str(doc.data)
