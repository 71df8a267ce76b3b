"""The git-tag webhook: a pushed release tag starts the release deployment of its environment.

An ASGI app (`slipway webhook serve`) for GitHub, GitLab and Gitea push events. Each
delivery is authenticated (GitHub and Gitea: HMAC-SHA256 of the body; GitLab: the shared
token; compared in constant time), then a tag push that matches a configured repository's
pattern starts `release/<environment>` with the tag as version, through
`run_deployment(..., timeout=0)`. Everything else gets its 2xx or 4xx answer, starts
nothing, and logs one line saying why.

Replays: the delivery id is not covered by the signature, so a captured delivery can be
sent again under a fresh one. Runs are therefore keyed on what the forge signs, the push
itself (forge, repository, ref, pushed commit), as Prefect's idempotency key: a push seen
before, redelivered or replayed, however old, is answered as a duplicate and starts
nothing. The record is the run on the Prefect server, which enforces the key atomically and
outlives any webhook restart (no state of the webhook's own to keep or share); a tag moved
to another commit is a new push and releases. To release a version again on purpose, use
`slipway release`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import parse_qs

import yaml
from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from blocks.errors import ConfigError
from blocks.rollout import IMAGE_TAG

logger = logging.getLogger("slipway.webhook")

Forge = Literal["github", "gitlab", "gitea"]
SEMVER_TAG = r"v\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?"
ZERO_SHA = "0" * 40
COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")  # SHA-1 or SHA-256 repositories
FORM = "application/x-www-form-urlencoded"  # GitHub's and Gitea's other content type
ANSWER_WITHIN = 8.0  # seconds; forges give up after 10


class RepositoryRule(BaseModel):
    """Which tags of a repository release which environment."""

    repository: str = Field(description="owner/name (GitLab: group/project), as the forge has it.")
    environment: str = Field(description="The environment whose release deployment starts.")
    tags: str = Field(
        default=SEMVER_TAG,
        description="Regular expression a tag must match in full (default: v1.2.3 style).",
    )

    @field_validator("tags")
    @classmethod
    def _compiles(cls, value: str) -> str:
        re.compile(value)
        return value


class WebhookConfig(BaseModel):
    """The webhook's configuration (YAML). Secrets come from the environment, never this file."""

    repositories: list[RepositoryRule] = Field(
        min_length=1,
        description="Which repositories' tags release which environment (at least one).",
    )
    deployment: str = Field(
        default="release/{environment}", description="Deployment to start, by environment."
    )
    max_body_bytes: int = Field(
        default=5 * 1024 * 1024, gt=0, description="Larger deliveries are refused with 413."
    )
    body_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="A body not received whole this long after its headers gets 408: forges "
        "send it at once, a slow client would hold a connection.",
    )

    @classmethod
    def from_file(cls, path: Path) -> WebhookConfig:
        try:
            data = yaml.safe_load(path.read_text())
            return cls.model_validate(data)
        except FileNotFoundError as exc:
            raise ConfigError(f"webhook config {path} not found: pass --config FILE") from exc
        except (yaml.YAMLError, ValidationError, re.error) as exc:
            first = str(exc).splitlines()[0:3]
            raise ConfigError(f"webhook config {path} is malformed: {' '.join(first)}") from exc


class WebhookSecrets(BaseModel):
    """Per-forge secrets; each falls back to SLIPWAY_WEBHOOK_SECRET."""

    github: SecretStr | None = None
    gitlab: SecretStr | None = None
    gitea: SecretStr | None = None

    @classmethod
    def from_env(cls) -> WebhookSecrets:
        shared = os.environ.get("SLIPWAY_WEBHOOK_SECRET")
        values = {
            forge: os.environ.get(f"SLIPWAY_{forge.upper()}_WEBHOOK_SECRET") or shared
            for forge in ("github", "gitlab", "gitea")
        }
        secrets = cls(**{k: SecretStr(v) for k, v in values.items() if v})
        if not any(values.values()):
            raise ConfigError(
                "no webhook secret: set SLIPWAY_WEBHOOK_SECRET (or SLIPWAY_GITHUB_WEBHOOK_SECRET, "
                "SLIPWAY_GITLAB_WEBHOOK_SECRET, SLIPWAY_GITEA_WEBHOOK_SECRET)"
            )
        return secrets


@dataclass(frozen=True)
class Push:
    forge: Forge
    delivery: str
    repository: str
    ref: str
    commit: str
    deleted: bool

    @property
    def identity(self) -> str:
        """What the forge signs, as the idempotency key of the run it starts."""
        return f"{self.forge}:{self.repository}:{self.ref}:{self.commit}"


class Rejected(Exception):
    """A delivery answered without starting anything."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class ReleaseStarter(Protocol):
    async def __call__(
        self, deployment: str, parameters: dict[str, Any], idempotency_key: str
    ) -> tuple[str, bool]: ...


async def start_release(
    deployment: str, parameters: dict[str, Any], idempotency_key: str
) -> tuple[str, bool]:
    """Create the release run on the Prefect server: (its id, whether it existed already)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterIdempotencyKey
    from prefect.deployments import run_deployment

    async with get_client() as client:
        existing = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                idempotency_key=FlowRunFilterIdempotencyKey(any_=[idempotency_key])
            ),
            limit=1,
        )
        if existing:
            return str(existing[0].id), True
        # Two deliveries racing past the check still get one run: the key is Prefect's too.
        run = await run_deployment(  # type: ignore[misc]
            deployment,
            client=client,
            parameters=parameters,
            timeout=0,
            idempotency_key=idempotency_key,
            as_subflow=False,
            tags=["git-tag"],
        )
    return str(run.id), False


def _forge(request: Request) -> Forge:
    headers = request.headers
    # Gitea also sends GitHub's headers: look for its own first.
    if "x-gitea-event" in headers:
        return "gitea"
    if "x-gitlab-event" in headers:
        return "gitlab"
    if "x-github-event" in headers:
        return "github"
    raise Rejected(400, "not a GitHub, GitLab or Gitea delivery (no event header)")


def _authenticate(forge: Forge, request: Request, body: bytes, secrets: WebhookSecrets) -> None:
    secret = getattr(secrets, forge)
    if secret is None:
        raise Rejected(403, f"{forge} deliveries are not accepted: no secret configured for it")
    key = secret.get_secret_value().encode()
    if forge == "gitlab":
        token = request.headers.get("x-gitlab-token")
        if not token:
            raise Rejected(401, "missing X-Gitlab-Token")
        if not hmac.compare_digest(token.encode(), key):
            raise Rejected(401, "X-Gitlab-Token does not match the configured secret")
        return
    expected = hmac.new(key, body, hashlib.sha256).hexdigest()
    if forge == "github":
        given = request.headers.get("x-hub-signature-256", "")
        if not given:
            raise Rejected(401, "missing X-Hub-Signature-256")
        given = given.removeprefix("sha256=")
    else:
        given = request.headers.get("x-gitea-signature", "")
        if not given:
            raise Rejected(401, "missing X-Gitea-Signature")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise Rejected(401, "signature does not match the body and the configured secret")


def _push(forge: Forge, request: Request, body: bytes) -> Push | str:
    """The push this delivery describes, or why it is not one (a reason to ignore it)."""
    headers = request.headers
    event = headers.get(f"x-{forge}-event", "")
    if forge == "github" and event == "ping":
        return "ping"
    if forge == "gitlab" and event not in ("Tag Push Hook", "Push Hook"):
        return f"event {event!r} is not a push"
    if forge != "gitlab" and event != "push":
        return f"event {event!r} is not a push"
    payload = _payload(request, body)
    delivery = {
        "github": headers.get("x-github-delivery"),
        "gitea": headers.get("x-gitea-delivery"),
        "gitlab": headers.get("x-gitlab-event-uuid") or headers.get("idempotency-key"),
    }[forge]
    try:
        if forge == "gitlab":
            repository = payload["project"]["path_with_namespace"]
            deleted = payload.get("after") == ZERO_SHA or payload.get("checkout_sha") is None
        else:
            repository = payload["repository"]["full_name"]
            deleted = bool(payload.get("deleted")) or payload.get("after") == ZERO_SHA
        ref = payload["ref"]
        commit = payload["after"]
    except (KeyError, TypeError) as exc:
        raise Rejected(400, f"push event without {exc}") from exc
    if not isinstance(repository, str) or not isinstance(ref, str):
        raise Rejected(400, "push event with a non-text repository or ref")
    if not isinstance(commit, str) or not COMMIT.fullmatch(commit):
        raise Rejected(400, "push event whose 'after' is not a commit id")
    # The id only names the delivery in logs: runs are keyed on the signed push.
    return Push(forge, delivery or "without id", repository, ref, commit, deleted)


def _payload(request: Request, body: bytes) -> dict[str, Any]:
    """The event: the JSON body, or its `payload` field when sent form-encoded."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    text: str | bytes = body
    if content_type == FORM:
        try:
            fields = parse_qs(body.decode(), strict_parsing=True)
        except (UnicodeDecodeError, ValueError) as exc:
            raise Rejected(400, f"form-encoded body is malformed: {exc}") from exc
        if len(fields.get("payload", [])) != 1:
            raise Rejected(400, "form-encoded body without one payload field")
        text = fields["payload"][0]
    try:
        payload = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Rejected(400, f"body is not JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise Rejected(400, "body is not a JSON object")
    return payload


async def _read_body(request: Request, limit: int, timeout: float) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise Rejected(413, f"body of {declared} bytes is over the {limit}-byte limit")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise Rejected(413, f"body is over the {limit}-byte limit")
                chunks.append(chunk)
    except TimeoutError as exc:
        raise Rejected(408, f"body not received whole within {timeout:g} s") from exc
    return b"".join(chunks)


def listen(host: str, port: int) -> socket.socket:
    """The server's socket, bound before anything starts: a port in use is one line."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family=family)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen ({exc.strerror or exc}) at {host}:{port}: choose another --port or "
            "--host, or stop what listens there"
        ) from exc
    sock.set_inheritable(True)
    return sock


def create_app(
    config: WebhookConfig, secrets: WebhookSecrets, starter: ReleaseStarter = start_release
) -> Starlette:
    """The webhook as an ASGI app."""

    def answer(status: int, outcome: str, reason: str, **extra: Any) -> JSONResponse:
        logger.info("%s %s: %s", status, outcome, reason)
        return JSONResponse({"outcome": outcome, "reason": reason, **extra}, status_code=status)

    async def receive(request: Request) -> JSONResponse:
        try:
            body = await _read_body(request, config.max_body_bytes, config.body_timeout_seconds)
            forge = _forge(request)
            _authenticate(forge, request, body, secrets)
            push = _push(forge, request, body)
        except Rejected as exc:
            return answer(exc.status, "rejected", exc.reason)
        except ClientDisconnect:
            # Nobody reads the answer; one line instead of the server's traceback.
            return answer(400, "rejected", "client disconnected before sending the whole body")
        if isinstance(push, str):
            return answer(200, "ignored", push)
        where = (
            f"{push.repository} {push.ref} at {push.commit[:12]} "
            f"({push.forge} delivery {push.delivery})"
        )
        if not push.ref.startswith("refs/tags/"):
            return answer(200, "ignored", f"branch push, not a tag: {where}")
        tag = push.ref.removeprefix("refs/tags/")
        if push.deleted:
            return answer(200, "ignored", f"tag deletion: {where}")
        rules = [r for r in config.repositories if r.repository == push.repository]
        if not rules:
            return answer(404, "rejected", f"repository not configured here: {where}")
        rule = next((r for r in rules if re.fullmatch(r.tags, tag)), None)
        if rule is None:
            return answer(200, "ignored", f"tag {tag!r} matches no release pattern: {where}")
        if not re.fullmatch(IMAGE_TAG, tag):
            return answer(422, "rejected", f"tag {tag!r} cannot be an image tag: {where}")
        deployment = config.deployment.format(environment=rule.environment)
        try:
            run_id, existed = await asyncio.wait_for(
                starter(
                    deployment,
                    {"version": tag, "env": rule.environment},
                    push.identity,
                ),
                ANSWER_WITHIN,
            )
        except TimeoutError:
            return answer(503, "error", f"Prefect did not answer in time: {where}")
        except Exception as exc:
            reason = f"could not start {deployment}: {type(exc).__name__}: {exc}"
            return answer(503, "error", f"{reason}: {where}")
        if existed:
            seen = f"push already seen (redelivered or replayed), run {run_id}: {where}"
            return answer(200, "duplicate", seen, run=run_id)
        return answer(
            202, "started", f"{deployment} version {tag}, run {run_id}: {where}", run=run_id
        )

    async def health(request: Request) -> JSONResponse:
        del request
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/", receive, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
        ]
    )
