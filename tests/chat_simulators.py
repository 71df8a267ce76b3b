"""HTTP-level simulators of Slack's and Telegram's public APIs, for the notifier tests.

These are simulators, not the services (nothing here can reach slack.com or
api.telegram.org): real HTTP servers on 127.0.0.1 (stdlib `ThreadingHTTPServer` in a
thread) that answer as the public APIs document, for what Slipway's notifiers rely on.
Each records every request (and the status it got) and the messages it accepted, and
`fail_next(n, status, retry_after)` makes the next n requests fail with 429 or 5xx; after
a 429, requests that come before Retry-After has passed get 429 again, as on the real APIs.

Slack (https://api.slack.com/messaging/webhooks, /methods/chat.postMessage,
/reference/block-kit):
- incoming webhook `POST /services/T.../B.../<secret>`: JSON (or form `payload=`) body;
  200 `ok`; 400 `invalid_payload` (not JSON), `no_text` (neither text nor blocks),
  `invalid_blocks`; 404 `no_service` (unknown webhook); 429 with `Retry-After`.
- Web API `POST /api/chat.postMessage`: Bearer token (or `token` form field); HTTP 200
  with `{"ok": false, "error": ...}`: `not_authed`, `invalid_auth`, `channel_not_found`
  (channel by id, `#name` or name), `no_text`, `invalid_blocks`; success
  `{"ok": true, "channel": <id>, "ts": ..., "message": ...}`; 429 `ratelimited` with
  `Retry-After`; `unknown_method` (404) for other methods.
- Block Kit limits checked: 50 blocks; header plain_text up to 150 characters; section
  text up to 3000, at most 10 fields of up to 2000; context 1-10 elements.

Telegram (https://core.telegram.org/bots/api#sendmessage, #formatting-options,
#making-requests):
- `POST /bot<token>/sendMessage` with JSON, form or query parameters; method names are
  case-insensitive. A malformed token answers 404 `Not Found`, a well-formed wrong one
  401 `Unauthorized`.
- 400 `Bad Request: chat_id is empty`, `chat not found`, `message text is empty`,
  `message is too long` (over 4096 UTF-16 code units after entity parsing), and
  `can't parse entities: ...` for bad HTML: unsupported or unclosed tags, unmatched end
  tags, like Telegram's own parser (a bare `&` stays literal; `&lt;`, `&gt;`, `&amp;`,
  `&quot;` and numeric entities are decoded).
- success `{"ok": true, "result": {message_id, from, chat, date, text, entities}}`, where
  `text` is the message with the tags stripped and entities decoded, as Telegram shows it.
- 429 `{"ok": false, "error_code": 429, "description": "Too Many Requests: retry after N",
  "parameters": {"retry_after": N}}`; 5xx `{"ok": false, "error_code": 500, ...}`.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

Answer = tuple[int, dict[str, str], bytes]


@dataclass
class Received:
    """One HTTP request as the simulator saw it, and the status it answered."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int = 0


class _Simulator:
    """A threaded HTTP server on a free 127.0.0.1 port; subclasses answer in `handle`."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self._lock = threading.Lock()
        self._faults: deque[tuple[int, int | None]] = deque()
        self._blocked_until = 0.0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def fail_next(self, count: int, status: int = 500, retry_after: int | None = None) -> None:
        """Answer the next `count` requests with `status` (429 waits `retry_after` s)."""
        with self._lock:
            self._faults.extend([(status, retry_after)] * count)

    def clear_faults(self) -> None:
        """Forget the failures still queued by `fail_next`."""
        with self._lock:
            self._faults.clear()

    @property
    def statuses(self) -> list[int]:
        return [r.status for r in self.requests]

    def dispatch(self, request: Received) -> Answer:
        with self._lock:
            self.requests.append(request)
            answer = self._fault(request) or self.handle(request)
            request.status = answer[0]
            return answer

    def _fault(self, request: Received) -> Answer | None:
        wait = self._blocked_until - time.monotonic()
        if wait > 0:
            return self.rate_limited(request, math.ceil(wait))
        if not self._faults:
            return None
        status, retry_after = self._faults.popleft()
        if status == 429:
            seconds = retry_after if retry_after is not None else 1
            self._blocked_until = time.monotonic() + seconds
            return self.rate_limited(request, seconds)
        return self.server_error(request, status)

    def handle(self, request: Received) -> Answer:
        raise NotImplementedError

    def rate_limited(self, request: Received, retry_after: int) -> Answer:
        raise NotImplementedError

    def server_error(self, request: Received, status: int) -> Answer:
        raise NotImplementedError


def _handler(sim: _Simulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            request = Received(self.command, self.path, dict(self.headers.items()), body)
            status, headers, payload = sim.dispatch(request)
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _serve

        def log_message(self, format: str, *args: Any) -> None:
            del format, args

    return Handler


def _json(status: int, data: Any, headers: dict[str, str] | None = None) -> Answer:
    return (
        status,
        {"Content-Type": "application/json; charset=utf-8", **(headers or {})},
        json.dumps(data).encode(),
    )


def _text(status: int, text: str, headers: dict[str, str] | None = None) -> Answer:
    return status, {"Content-Type": "text/html", **(headers or {})}, text.encode()


def _params(request: Received) -> dict[str, Any] | None:
    """Parameters from the query string and a JSON or form body; None if the body is bad."""
    params: dict[str, Any] = {k: v[-1] for k, v in parse_qs(urlsplit(request.path).query).items()}
    kind = next((v for k, v in request.headers.items() if k.lower() == "content-type"), "")
    if not request.body:
        return params
    if "json" in kind.lower():
        try:
            body = json.loads(request.body)
        except ValueError:
            return None
        if not isinstance(body, dict):
            return None
        params.update(body)
    else:
        form = parse_qs(request.body.decode(errors="replace"), keep_blank_values=True)
        params.update({k: v[-1] for k, v in form.items()})
    return params


# --- Slack ----------------------------------------------------------------------------


@dataclass
class SlackMessage:
    """A message Slack accepted, from a webhook or chat.postMessage."""

    via: str  # "webhook" or "api"
    channel: str  # the channel id
    text: str | None
    blocks: list[dict[str, Any]]
    payload: dict[str, Any]

    def header(self) -> str:
        return next((b["text"]["text"] for b in self.blocks if b["type"] == "header"), "")

    def visible_text(self) -> str:
        """The blocks' text as people read it: Slack's escaping undone, links as labels."""
        parts: list[str] = []
        for block in self.blocks:
            if block["type"] == "header":
                parts.append(block["text"]["text"])
            elif block["type"] == "section":
                texts = [block["text"]] if "text" in block else []
                parts += [_shown(t) for t in texts + block.get("fields", [])]
            elif block["type"] == "context":
                parts += [_shown(e) for e in block["elements"] if "text" in e]
        return "\n".join(parts)

    def links(self) -> list[str]:
        found: list[str] = []
        for block in self.blocks:
            for obj in [block.get("text"), *block.get("fields", []), *block.get("elements", [])]:
                if isinstance(obj, dict) and obj.get("type") == "mrkdwn":
                    found += [_slack_unescape(u) for u in _SLACK_LINK.findall(obj["text"])]
        return found


_SLACK_LINK = re.compile(r"<([^<>|]+)(?:\|[^<>]*)?>")


def _slack_unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _shown(obj: dict[str, Any]) -> str:
    text = str(obj["text"])
    if obj.get("type") == "mrkdwn":
        text = _SLACK_LINK.sub(lambda m: m.group(0)[1:-1].split("|")[-1], text)
        text = _slack_unescape(text)
    return text


def _text_object_ok(
    obj: Any, limit: int, kinds: tuple[str, ...] = ("plain_text", "mrkdwn")
) -> bool:
    return (
        isinstance(obj, dict)
        and obj.get("type") in kinds
        and isinstance(obj.get("text"), str)
        and 0 < len(obj["text"]) <= limit
    )


def slack_blocks_error(blocks: Any) -> str | None:
    """Why Slack would answer `invalid_blocks`, or None."""
    if not isinstance(blocks, list) or len(blocks) > 50:
        return "blocks must be a list of at most 50"
    for block in blocks:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "header":
            if not _text_object_ok(block.get("text"), 150, ("plain_text",)):
                return "header needs plain_text of 1-150 characters"
        elif kind == "section":
            fields = block.get("fields", [])
            if "text" not in block and not fields:
                return "section needs text or fields"
            if "text" in block and not _text_object_ok(block["text"], 3000):
                return "section text must be 1-3000 characters"
            if len(fields) > 10 or not all(_text_object_ok(f, 2000) for f in fields):
                return "section fields: at most 10, each 1-2000 characters"
        elif kind == "context":
            elements = block.get("elements", [])
            if not 0 < len(elements) <= 10 or not all(_text_object_ok(e, 3000) for e in elements):
                return "context needs 1-10 text elements"
        elif kind not in {"divider", "image", "actions", "rich_text"}:
            return f"unknown block type {kind!r}"
    return None


class SlackSimulator(_Simulator):
    """Slack's incoming webhooks and Web API `chat.postMessage` (see the module docstring)."""

    TEAM, HOOK = "T0SLIPWAY", "B0DEPLOYS"
    CHANNEL_ID, CHANNEL_NAME = "C0DEPLOYS01", "deploys"

    def __init__(self) -> None:
        super().__init__()
        self.webhook_secret = secrets.token_hex(12)
        self.bot_token = f"xoxb-{secrets.randbelow(10**12)}-{secrets.token_hex(12)}"
        self.messages: list[SlackMessage] = []
        self._ts = 0

    @property
    def webhook_url(self) -> str:
        return f"{self.url}/services/{self.TEAM}/{self.HOOK}/{self.webhook_secret}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    def handle(self, request: Received) -> Answer:
        path = urlsplit(request.path).path
        if path.startswith("/services/"):
            return self._webhook(path, request)
        if path.startswith("/api/"):
            return self._web_api(path.removeprefix("/api/"), request)
        return _text(404, "Not Found")

    def rate_limited(self, request: Received, retry_after: int) -> Answer:
        headers = {"Retry-After": str(retry_after)}
        if request.path.startswith("/api/"):
            return _json(429, {"ok": False, "error": "ratelimited"}, headers)
        return _text(429, "rate_limited", headers)

    def server_error(self, request: Received, status: int) -> Answer:
        if request.path.startswith("/api/"):
            return _json(status, {"ok": False, "error": "fatal_error"})
        return _text(status, "internal_error")

    def _webhook(self, path: str, request: Received) -> Answer:
        if request.method != "POST" or path != urlsplit(self.webhook_url).path:
            return _text(404, "no_service")
        params = _params(request)
        if params is not None and "payload" in params and isinstance(params["payload"], str):
            try:
                params = json.loads(params["payload"])
            except ValueError:
                params = None
        if not isinstance(params, dict):
            return _text(400, "invalid_payload")
        return self._accept("webhook", self.CHANNEL_ID, params, webhook=True)

    def _web_api(self, method: str, request: Received) -> Answer:
        if method != "chat.postMessage":
            return _json(404, {"ok": False, "error": "unknown_method"})
        params = _params(request)
        if params is None:
            return _json(200, {"ok": False, "error": "invalid_json"})
        auth = next((v for k, v in request.headers.items() if k.lower() == "authorization"), "")
        token = auth.removeprefix("Bearer ").strip() if auth else str(params.get("token", ""))
        if not token:
            return _json(200, {"ok": False, "error": "not_authed"})
        if token != self.bot_token:
            return _json(200, {"ok": False, "error": "invalid_auth"})
        channel = str(params.get("channel", ""))
        if channel not in {self.CHANNEL_ID, self.CHANNEL_NAME, f"#{self.CHANNEL_NAME}"}:
            return _json(200, {"ok": False, "error": "channel_not_found"})
        if isinstance(params.get("blocks"), str):  # form encoding sends blocks as JSON text
            try:
                params["blocks"] = json.loads(params["blocks"])
            except ValueError:
                return _json(200, {"ok": False, "error": "invalid_blocks"})
        return self._accept("api", self.CHANNEL_ID, params, webhook=False)

    def _accept(self, via: str, channel: str, params: dict[str, Any], *, webhook: bool) -> Answer:
        text, blocks = params.get("text"), params.get("blocks")
        if not text and not blocks:
            return (
                _text(400, "no_text") if webhook else _json(200, {"ok": False, "error": "no_text"})
            )
        if blocks is not None and slack_blocks_error(blocks):
            if webhook:
                return _text(400, "invalid_blocks")
            return _json(200, {"ok": False, "error": "invalid_blocks"})
        self.messages.append(SlackMessage(via, channel, text, blocks or [], params))
        if webhook:
            return _text(200, "ok")
        self._ts += 1
        ts = f"{int(time.time())}.{self._ts:06d}"
        message = {"type": "message", "text": text, "blocks": blocks or [], "ts": ts}
        return _json(200, {"ok": True, "channel": channel, "ts": ts, "message": message})


# --- Telegram -------------------------------------------------------------------------


@dataclass
class TelegramMessage:
    """A message Telegram accepted: `text` as shown (tags stripped), `html` as sent."""

    chat_id: str
    text: str
    html: str
    entities: list[dict[str, Any]]
    payload: dict[str, Any] = field(repr=False)

    def links(self) -> list[str]:
        return [e["url"] for e in self.entities if e["type"] == "text_link"]

    def bold(self) -> list[str]:
        """The bold runs of the text."""
        units = self.text.encode("utf-16-le")
        return [
            units[2 * e["offset"] : 2 * (e["offset"] + e["length"])].decode("utf-16-le")
            for e in self.entities
            if e["type"] == "bold"
        ]


class HtmlError(ValueError):
    """Telegram's `can't parse entities` reason."""


_ENTITY_TYPES = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "span": "spoiler",
    "tg-spoiler": "spoiler",
    "tg-emoji": "custom_emoji",
    "a": "text_link",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
}
_HTML_ENTITY = re.compile(r"&(?:(lt|gt|amp|quot)|#(\d{1,7})|#x([0-9a-fA-F]{1,6}));")
_NAMED = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_ATTRIBUTE = re.compile(
    r"""\s*([a-zA-Z0-9_-]+)\s*=\s*(?:"([^"]*)"|'([^']*)'|([a-zA-Z0-9.-]+))""", re.ASCII
)


def _utf16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _decode_entities(text: str) -> str:
    def one(m: re.Match[str]) -> str:
        if m.group(1):
            return _NAMED[m.group(1)]
        return chr(int(m.group(2)) if m.group(2) else int(m.group(3), 16))

    return _HTML_ENTITY.sub(one, text)


def parse_telegram_html(source: str) -> tuple[str, list[dict[str, Any]]]:
    """Text and entities of an HTML message, as Telegram parses it; raises HtmlError."""

    def at(i: int) -> int:
        return len(source[:i].encode())

    out: list[str] = []
    length = 0  # of `out`, in UTF-16 code units
    stack: list[tuple[str, int, dict[str, str]]] = []
    entities: list[dict[str, Any]] = []
    i = 0
    while i < len(source):
        char = source[i]
        if char == "&" and (m := _HTML_ENTITY.match(source, i)):
            piece = _decode_entities(m.group(0))
            out.append(piece)
            length += _utf16(piece)
            i = m.end()
            continue
        if char != "<":
            out.append(char)
            length += _utf16(char)
            i += 1
            continue
        begin = i
        if source.startswith("</", i):
            end = source.find(">", i)
            if end == -1:
                raise HtmlError(f"Unclosed end tag at byte offset {at(begin)}")
            name = source[i + 2 : end].strip().lower()
            if not stack:
                raise HtmlError(f"Unexpected end tag at byte offset {at(begin)}")
            tag, start, attrs = stack.pop()
            if name != tag:
                raise HtmlError(
                    f'Unmatched end tag at byte offset {at(begin)}, expected "</{tag}>", '
                    f'found "</{name}>"'
                )
            if length > start and not (tag == "a" and not attrs.get("href")):
                entity: dict[str, Any] = {
                    "type": _ENTITY_TYPES[tag],
                    "offset": start,
                    "length": length - start,
                }
                if tag == "a":
                    entity["url"] = attrs["href"]
                entities.append(entity)
            i = end + 1
            continue
        j = i + 1
        while j < len(source) and not source[j].isspace() and source[j] != ">":
            j += 1
        if j >= len(source):
            raise HtmlError(f"Unclosed start tag at byte offset {at(begin)}")
        name = source[i + 1 : j].lower()
        if name not in _ENTITY_TYPES:
            raise HtmlError(f'Unsupported start tag "{name}" at byte offset {at(begin)}')
        attrs = {}
        while True:
            while j < len(source) and source[j].isspace():
                j += 1
            if j >= len(source):
                raise HtmlError(f"Unclosed start tag at byte offset {at(begin)}")
            if source[j] == ">":
                break
            m = _ATTRIBUTE.match(source, j)
            if not m:
                raise HtmlError(
                    f'Expected equal sign in declaration of an attribute of the tag "{name}" '
                    f"at byte offset {at(begin)}"
                )
            value = next(g for g in m.groups()[1:] if g is not None)
            attrs[m.group(1).lower()] = _decode_entities(value)
            j = m.end()
        stack.append((name, length, attrs))
        i = j + 1
    if stack:
        raise HtmlError(f'Can\'t find end tag corresponding to start tag "{stack[-1][0]}"')
    text = "".join(out)
    stripped = text.lstrip()
    shift = _utf16(text) - _utf16(stripped)
    for entity in entities:
        entity["offset"] = max(0, entity["offset"] - shift)
    return stripped.rstrip(), sorted(entities, key=lambda e: (e["offset"], -e["length"]))


class TelegramSimulator(_Simulator):
    """Telegram's Bot API `sendMessage` (see the module docstring), for one bot."""

    BOT_ID = 7000000001

    def __init__(self, chat_ids: tuple[str, ...] = ("111111111", "222222222")) -> None:
        super().__init__()
        self.bot_token = f"{self.BOT_ID}:AA{secrets.token_urlsafe(32)[:33]}"
        self.chat_ids = chat_ids
        self.messages: list[TelegramMessage] = []
        self._message_ids: dict[str, int] = {}

    @property
    def api_url(self) -> str:
        return self.url

    def rate_limited(self, request: Received, retry_after: int) -> Answer:
        return _json(
            429,
            {
                "ok": False,
                "error_code": 429,
                "description": f"Too Many Requests: retry after {retry_after}",
                "parameters": {"retry_after": retry_after},
            },
        )

    def server_error(self, request: Received, status: int) -> Answer:
        return _json(
            status, {"ok": False, "error_code": status, "description": "Internal Server Error"}
        )

    @staticmethod
    def _error(status: int, description: str) -> Answer:
        return _json(status, {"ok": False, "error_code": status, "description": description})

    def handle(self, request: Received) -> Answer:
        m = re.fullmatch(r"/bot([^/]*)/([A-Za-z]+)", urlsplit(request.path).path)
        if not m:
            return self._error(404, "Not Found")
        token, method = m.groups()
        if token != self.bot_token:
            if re.fullmatch(r"\d+:[A-Za-z0-9_-]{30,}", token):
                return self._error(401, "Unauthorized")
            return self._error(404, "Not Found")
        params = _params(request)
        if params is None:
            return self._error(400, "Bad Request: invalid JSON")
        if method.lower() == "getme":
            return _json(200, {"ok": True, "result": self._bot()})
        if method.lower() != "sendmessage":
            return self._error(404, "Not Found")
        return self._send_message(params)

    def _bot(self) -> dict[str, Any]:
        return {
            "id": self.BOT_ID,
            "is_bot": True,
            "first_name": "Slipway",
            "username": "slipway_bot",
        }

    def _send_message(self, params: dict[str, Any]) -> Answer:
        chat_id = str(params.get("chat_id", "")).strip()
        if not chat_id:
            return self._error(400, "Bad Request: chat_id is empty")
        if chat_id not in self.chat_ids:
            return self._error(400, "Bad Request: chat not found")
        source = str(params.get("text") or "")
        if not source.strip():
            return self._error(400, "Bad Request: message text is empty")
        mode = str(params.get("parse_mode") or "")
        entities: list[dict[str, Any]] = []
        if mode.lower() == "html":
            try:
                text, entities = parse_telegram_html(source)
            except HtmlError as exc:
                return self._error(400, f"Bad Request: can't parse entities: {exc}")
        elif not mode:
            text = source.strip()
        else:
            return self._error(400, f"Bad Request: parse_mode {mode!r} is not simulated")
        if not text:
            return self._error(400, "Bad Request: message text is empty")
        if _utf16(text) > 4096:
            return self._error(400, "Bad Request: message is too long")
        self.messages.append(TelegramMessage(chat_id, text, source, entities, params))
        self._message_ids[chat_id] = self._message_ids.get(chat_id, 0) + 1
        chat_number = int(chat_id) if chat_id.lstrip("-").isdigit() else 0
        result = {
            "message_id": self._message_ids[chat_id],
            "from": self._bot(),
            "chat": {"id": chat_number, "type": "private", "first_name": "Admin"},
            "date": int(time.time()),
            "text": text,
            **({"entities": entities} if entities else {}),
        }
        return _json(200, {"ok": True, "result": result})
