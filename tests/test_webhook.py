"""The git-tag webhook end to end: `slipway webhook serve` against a real Prefect server.

A release deployment is parked on a work pool without a worker, so the runs the webhook
creates stay Scheduled and the test reads them back with their parameters.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness.prefect_server import PrefectInfo
from tests.harness.procs import free_port, wait_until

pytestmark = [pytest.mark.prefect]

REPO = Path(__file__).resolve().parent.parent
SECRET = "s3cr3t-" + secrets.token_hex(8)
PARKED_POOL = "slipway-parked"
ENVIRONMENT = "webhook-test"
ZERO = "0" * 40


@pytest.fixture(scope="module")
def release_deployment(prefect_server: PrefectInfo) -> str:
    """`release/webhook-test` on a pool no worker serves."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client, contextlib.suppress(ObjectAlreadyExists):
        client.create_work_pool(WorkPoolCreate(name=PARKED_POOL, type="process"))
    source = flow.from_source(source=str(REPO), entrypoint="flows/release.py:release")
    deployment_id = source.deploy(  # type: ignore[union-attr]
        name=ENVIRONMENT,
        work_pool_name=PARKED_POOL,
        parameters={"env": ENVIRONMENT},
        print_next_steps=False,
    )
    return str(deployment_id)


@pytest.fixture(scope="module")
def webhook(
    prefect_server: PrefectInfo, release_deployment: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    config = tmp_path_factory.mktemp("webhook") / "webhook.yaml"
    config.write_text(
        "repositories:\n"
        f"  - repository: acme/shop\n    environment: {ENVIRONMENT}\n"
        f"  - repository: group/sub/shop\n    environment: {ENVIRONMENT}\n"
    )
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLIPWAY_")}
    env |= {"PREFECT_API_URL": prefect_server.api_url, "SLIPWAY_WEBHOOK_SECRET": SECRET}
    proc = subprocess.Popen(
        serve_command(config, port),
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(up, timeout=60, what="webhook", interval=0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def releases(deployment_id: str) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            deployment_filter=DeploymentFilter(
                id=DeploymentFilterId(any_=[uuid.UUID(deployment_id)])
            )
        )


def github_push(
    url: str, ref: str, *, delivery: str | None = None, secret: str = SECRET, **extra: Any
) -> httpx.Response:
    body = json.dumps(
        {
            "ref": ref,
            "before": ZERO,
            "after": "a" * 40,
            "created": True,
            "deleted": False,
            "repository": {"full_name": "acme/shop"},
            **extra,
        }
    ).encode()
    return send_signed(url, body, delivery=delivery, secret=secret)


def serve_command(config: Path, port: int) -> list[str]:
    """`slipway webhook serve` with this config on this port."""
    return [
        sys.executable,
        *("-m", "deployments.cli", "webhook", "serve"),
        *("--config", str(config), "--port", str(port)),
    ]


def send_signed(
    url: str,
    body: bytes,
    *,
    content_type: str = "application/json",
    delivery: str | None = None,
    secret: str = SECRET,
    timeout: float = 10,
) -> httpx.Response:
    """A GitHub push delivery of `body` as sent, signed as GitHub signs it."""
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return httpx.post(
        url,
        content=body,
        headers={
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
            "X-Hub-Signature-256": signature,
            "Content-Type": content_type,
        },
        timeout=timeout,
    )


def test_signed_tag_push_starts_one_release(webhook: str, release_deployment: str) -> None:
    before = len(releases(release_deployment))
    delivery = str(uuid.uuid4())
    first = github_push(webhook, "refs/tags/v1.4.2", delivery=delivery)
    assert first.status_code == 202, first.text
    runs = releases(release_deployment)
    assert len(runs) == before + 1
    run = next(r for r in runs if str(r.id) == first.json()["run"])
    assert run.parameters == {"version": "v1.4.2", "env": ENVIRONMENT}

    again = github_push(webhook, "refs/tags/v1.4.2", delivery=delivery)
    assert again.status_code == 200, again.text
    assert again.json()["outcome"] == "duplicate"
    assert again.json()["run"] == first.json()["run"]
    assert len(releases(release_deployment)) == before + 1


@pytest.mark.parametrize(
    ("case", "status", "outcome"),
    [
        ("bad signature", 401, "rejected"),
        ("missing signature", 401, "rejected"),
        ("branch push", 200, "ignored"),
        ("tag deletion", 200, "ignored"),
        ("tag not a release", 200, "ignored"),
        ("unknown repository", 404, "rejected"),
        ("malformed body", 400, "rejected"),
        ("oversized body", 413, "rejected"),
    ],
)
def test_what_starts_nothing(
    webhook: str, release_deployment: str, case: str, status: int, outcome: str
) -> None:
    before = len(releases(release_deployment))
    if case == "bad signature":
        res = github_push(webhook, "refs/tags/v9.9.9", secret="wrong")  # noqa: S106
    elif case == "missing signature":
        res = httpx.post(
            webhook,
            content=b'{"ref": "refs/tags/v9.9.9"}',
            headers={"X-GitHub-Event": "push", "X-GitHub-Delivery": "x"},
        )
    elif case == "branch push":
        res = github_push(webhook, "refs/heads/main")
    elif case == "tag deletion":
        res = github_push(webhook, "refs/tags/v9.9.9", deleted=True, after=ZERO)
    elif case == "tag not a release":
        res = github_push(webhook, "refs/tags/nightly-build")
    elif case == "unknown repository":
        res = github_push(webhook, "refs/tags/v9.9.9", repository={"full_name": "evil/fork"})
    elif case == "malformed body":
        body = b"{not json"
        sig = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        res = httpx.post(
            webhook,
            content=body,
            headers={
                "X-GitHub-Event": "push",
                "X-GitHub-Delivery": "m",
                "X-Hub-Signature-256": sig,
            },
        )
    else:
        res = httpx.post(
            webhook,
            content=b"x" * (6 * 1024 * 1024),
            headers={"X-GitHub-Event": "push", "X-GitHub-Delivery": "big"},
            timeout=10,
        )
    assert res.status_code == status, res.text
    assert res.json()["outcome"] == outcome
    assert len(releases(release_deployment)) == before


def test_gitlab_and_gitea_tag_pushes(webhook: str, release_deployment: str) -> None:
    before = len(releases(release_deployment))
    gitlab_body = json.dumps(
        {
            "object_kind": "tag_push",
            "ref": "refs/tags/v2.0.0",
            "after": "b" * 40,
            "checkout_sha": "b" * 40,
            "project": {"path_with_namespace": "group/sub/shop"},
        }
    ).encode()
    wrong = httpx.post(
        webhook,
        content=gitlab_body,
        headers={
            "X-Gitlab-Event": "Tag Push Hook",
            "X-Gitlab-Token": "nope",
            "X-Gitlab-Event-UUID": "g1",
        },
    )
    assert wrong.status_code == 401
    gitlab = httpx.post(
        webhook,
        content=gitlab_body,
        headers={
            "X-Gitlab-Event": "Tag Push Hook",
            "X-Gitlab-Token": SECRET,
            "X-Gitlab-Event-UUID": "g1",
        },
        timeout=10,
    )
    assert gitlab.status_code == 202, gitlab.text

    gitea_body = json.dumps(
        {"ref": "refs/tags/v2.0.1", "after": "c" * 40, "repository": {"full_name": "acme/shop"}}
    ).encode()
    signature = hmac.new(SECRET.encode(), gitea_body, hashlib.sha256).hexdigest()
    gitea = httpx.post(
        webhook,
        content=gitea_body,
        headers={
            "X-Gitea-Event": "push",
            "X-GitHub-Event": "push",
            "X-Gitea-Delivery": str(uuid.uuid4()),
            "X-Gitea-Signature": signature,
        },
        timeout=10,
    )
    assert gitea.status_code == 202, gitea.text
    versions = sorted(r.parameters["version"] for r in releases(release_deployment))
    assert len(versions) == before + 2
    assert {"v2.0.0", "v2.0.1"} <= set(versions)
