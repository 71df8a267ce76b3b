"""The git-tag webhook off the happy path.

3. A captured signed delivery sent again under a fresh delivery id, or an old tag's push
   replayed, starts nothing: runs are keyed on the signed push, on the Prefect server, so
   this holds across a restart of the webhook too.
17. A slow body gets 408; a client that hangs up leaves one log line, no traceback;
   GitHub's form-encoded deliveries are accepted.

`slipway webhook serve` runs as a process against the session's Prefect server, with the
release deployment of tests/test_webhook.py parked on a pool no worker serves.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from tests.harness.prefect_server import PrefectInfo
from tests.harness.procs import free_port, wait_until
from tests.test_webhook import (
    ENVIRONMENT,
    release_deployment,
    releases,
    send_signed,
    serve_command,
)

__all__ = ["release_deployment"]  # the fixture, used by name

pytestmark = [pytest.mark.prefect]

REPO = Path(__file__).resolve().parents[2]
SECRET = "replay-" + secrets.token_hex(8)
REPLAYS = 20
BODY_TIMEOUT = 2  # seconds, in the webhook's configuration


class Webhook:
    """The webhook process; its output goes to a file the tests read."""

    def __init__(self, config: Path, log: Path, api_url: str) -> None:
        self.config = config
        self.log = log
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SLIPWAY_")}
        self.env |= {"PREFECT_API_URL": api_url, "SLIPWAY_WEBHOOK_SECRET": SECRET}
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.port = free_port()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                serve_command(self.config, self.port),
                cwd=REPO,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

        def up() -> bool:
            try:
                return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, timeout=90, what="webhook", interval=0.3)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
            self.proc = None

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def webhook(
    prefect_server: PrefectInfo, release_deployment: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Webhook]:
    folder = tmp_path_factory.mktemp("webhook-faults")
    config = folder / "webhook.yaml"
    config.write_text(
        f"body_timeout_seconds: {BODY_TIMEOUT}\n"
        "repositories:\n"
        f"  - repository: acme/shop\n    environment: {ENVIRONMENT}\n"
    )
    hook = Webhook(config, folder / "webhook.log", prefect_server.api_url)
    hook.start()
    try:
        yield hook
    finally:
        hook.stop()


def push_body(tag: str, commit: str) -> bytes:
    return json.dumps(
        {
            "ref": f"refs/tags/{tag}",
            "before": "0" * 40,
            "after": commit,
            "created": True,
            "deleted": False,
            "repository": {"full_name": "acme/shop"},
        }
    ).encode()


def send(
    url: str, body: bytes, content_type: str = "application/json", delivery: str | None = None
) -> httpx.Response:
    """A GitHub delivery: the signature covers the body as sent."""
    return send_signed(
        url, body, content_type=content_type, delivery=delivery, secret=SECRET, timeout=30
    )


def commit() -> str:
    return secrets.token_hex(20)


def runs_of(deployment: str, version: str) -> list[Any]:
    return [r for r in releases(deployment) if r.parameters.get("version") == version]


# --- 3. replays ---------------------------------------------------------------------------


def test_replayed_signed_push_starts_nothing_even_after_a_restart(
    webhook: Webhook, release_deployment: str
) -> None:
    old = push_body("v7.0.0", commit())
    first = send(webhook.url, old)
    assert first.status_code == 202, first.text
    run = first.json()["run"]

    # The captured delivery again, each time under a fresh delivery id, all at once.
    with ThreadPoolExecutor(max_workers=REPLAYS) as pool:
        answers = list(pool.map(lambda _: send(webhook.url, old), range(REPLAYS)))
    for answer in answers:
        assert answer.status_code == 200, answer.text
        assert answer.json()["outcome"] == "duplicate"
        assert answer.json()["run"] == run
    assert [str(r.id) for r in runs_of(release_deployment, "v7.0.0")] == [run]

    newer = send(webhook.url, push_body("v7.1.0", commit()))
    assert newer.status_code == 202, newer.text

    # An old tag's push replayed after the webhook restarted: still nothing new.
    webhook.stop()
    webhook.start()
    for _ in range(3):
        again = send(webhook.url, old)
        assert again.status_code == 200, again.text
        assert again.json()["outcome"] == "duplicate"
        assert again.json()["run"] == run
    assert len(runs_of(release_deployment, "v7.0.0")) == 1
    assert len(runs_of(release_deployment, "v7.1.0")) == 1


def test_simultaneous_copies_of_a_new_push_start_one_run(
    webhook: Webhook, release_deployment: str
) -> None:
    """No copy is "seen" yet when they all arrive: Prefect's idempotency key decides.

    On a loaded machine Prefect may not answer some of them within the webhook's deadline:
    those get 503, which a forge redelivers, and a redelivery is answered with the one run.
    """
    body = push_body("v7.0.1", commit())
    with ThreadPoolExecutor(max_workers=REPLAYS) as pool:
        answers = list(pool.map(lambda _: send(webhook.url, body), range(REPLAYS)))
    assert all(a.status_code in (200, 202, 503) for a in answers), [a.text for a in answers]
    assert any(a.status_code in (200, 202) for a in answers), [a.text for a in answers]
    [run] = runs_of(release_deployment, "v7.0.1")
    named = {a.json().get("run") for a in answers} - {None}
    assert named == {str(run.id)}
    redelivered = send(webhook.url, body)
    assert redelivered.status_code == 200, redelivered.text
    assert redelivered.json()["run"] == str(run.id)
    assert [r.id for r in runs_of(release_deployment, "v7.0.1")] == [run.id]


def test_a_tag_moved_to_another_commit_is_a_new_push(
    webhook: Webhook, release_deployment: str
) -> None:
    first = send(webhook.url, push_body("v7.2.0", commit()))
    moved = send(webhook.url, push_body("v7.2.0", commit()))
    assert first.status_code == 202, first.text
    assert moved.status_code == 202, moved.text
    assert len(runs_of(release_deployment, "v7.2.0")) == 2


def test_push_without_a_commit_id_is_rejected(webhook: Webhook, release_deployment: str) -> None:
    body = json.dumps(
        {"ref": "refs/tags/v7.3.0", "after": "HEAD", "repository": {"full_name": "acme/shop"}}
    ).encode()
    res = send(webhook.url, body)
    assert res.status_code == 400, res.text
    assert res.json()["outcome"] == "rejected"
    assert runs_of(release_deployment, "v7.3.0") == []


# --- 17. robustness -----------------------------------------------------------------------


def test_form_encoded_github_delivery_is_accepted(
    webhook: Webhook, release_deployment: str
) -> None:
    pushed = commit()
    body = urlencode({"payload": push_body("v7.4.0", pushed).decode()}).encode()
    res = send(webhook.url, body, "application/x-www-form-urlencoded")
    assert res.status_code == 202, res.text
    [run] = runs_of(release_deployment, "v7.4.0")
    assert run.parameters == {"version": "v7.4.0", "env": ENVIRONMENT}

    # The same push, now as JSON: one push, one run.
    again = send(webhook.url, push_body("v7.4.0", pushed))
    assert again.json()["outcome"] == "duplicate"

    forged = body.replace(b"acme", b"evil")
    unsigned = httpx.post(
        webhook.url,
        content=forged,
        headers={
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature-256": "sha256=" + "0" * 64,
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    assert unsigned.status_code == 401


def partial_request(port: int, body: bytes, declared: int) -> socket.socket:
    """A signed-looking POST whose body stops short of its Content-Length."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    head = (
        "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-GitHub-Event: push\r\n"
        "X-GitHub-Delivery: slow\r\nX-Hub-Signature-256: sha256=00\r\n"
        f"Content-Type: application/json\r\nContent-Length: {declared}\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    return sock


def test_a_slow_body_is_answered_408(webhook: Webhook) -> None:
    # The server must answer on its own: the socket's timeout is only a bound for the test.
    with partial_request(webhook.port, b'{"ref": "refs/tags/', 500) as sock:
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert httpx.get(f"{webhook.url}/health").status_code == 200


def test_a_client_that_hangs_up_leaves_one_line_and_no_traceback(webhook: Webhook) -> None:
    for _ in range(3):
        sock = partial_request(webhook.port, b'{"ref": "refs/tags/', 500)
        sock.close()

    def logged() -> bool:
        return webhook.output().count("client disconnected before sending the whole body") >= 3

    wait_until(logged, timeout=60, what="the disconnect log line", interval=0.2)
    assert httpx.get(f"{webhook.url}/health").status_code == 200
    output = webhook.output()
    assert "Traceback" not in output, output
    assert "Exception in ASGI application" not in output, output
