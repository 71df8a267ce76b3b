"""The simulated API server's HTTP layer: the REST verbs on each resource (and its
`status`, `scale` and `log` subresources), watch streams, access checks and Tables.

Paths are resolved in routes.py as the real server has them. HTTP/1.1, JSON only (a
protobuf body gets 415); plain HTTP by default, HTTPS with a `tls` context. With a `token`,
a request without `Authorization: Bearer <token>` gets 401 as the real server answers an
unauthenticated one; without, the header is accepted and ignored. A watch
(`?watch=true`) answers a chunked stream of JSON events, one per line:
`{"type": "ADDED"|"MODIFIED"|"DELETED"|"BOOKMARK", "object": {...}}`. With
`Accept: ...;as=Table` (kubectl get), GET answers a `meta.k8s.io/v1` Table.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.k8s_sim import access, protobuf, tables
from tests.k8s_sim.jobs import ORPHAN_WARNING
from tests.k8s_sim.patch import apply_patch
from tests.k8s_sim.resources import Resource
from tests.k8s_sim.routes import NOT_FOUND, Route, list_body, route, scale_of
from tests.k8s_sim.selectors import query_matcher
from tests.k8s_sim.store import Event, Store
from tests.k8s_sim.store_errors import ApiError, bad_request

DEFAULT_WATCH_SECONDS = 1800


class ApiServer:
    """The HTTP server on a free 127.0.0.1 port, serving `store`."""

    def __init__(
        self, store: Store, tls: ssl.SSLContext | None = None, token: str | None = None
    ) -> None:
        self.store = store
        self.token = token
        self.access = access.Access()
        # A Pod's log text: (namespace, name, query) -> text; the simulator sets it.
        self.logs: Callable[[str, str, dict[str, str]], str] = lambda ns, name, query: ""
        self.errors: list[str] = []  # unexpected exceptions (simulator bugs)
        self.closing = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._server.block_on_close = False
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self._scheme = "https" if tls is not None else "http"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
            name="k8s-sim-http",
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{self._scheme}://{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self.closing.set()
        with self.store.changed:
            self.store.changed.notify_all()
        self._server.shutdown()
        self._server.server_close()

    # verbs
    def handle(
        self,
        method: str,
        target: Route,
        query: dict[str, str],
        headers: Any,
        body: bytes,
        warnings: list[str],
    ) -> tuple[int, dict[str, Any]] | Iterator[dict[str, Any]]:
        """One verb on a resource; `warnings` gets what goes in Warning headers."""
        res, ns, name, sub = target.res, target.namespace or "", target.name, target.sub
        dry_run = query.get("dryRun") == "All"
        if method == "GET" and not name:
            matcher = query_matcher(query.get("labelSelector", ""), query.get("fieldSelector", ""))
            if query.get("watch") in ("true", "1"):
                return self._watch(res, target.namespace, matcher, query)
            items, rv = self.store.list_objects(res, target.namespace, matcher)
            return 200, list_body(res, items, rv)
        if method == "POST" and not name:
            return 201, self.store.create(res, ns, _json(body), dry_run=dry_run)
        if method == "DELETE" and not name:
            matcher = query_matcher(query.get("labelSelector", ""), query.get("fieldSelector", ""))
            items, _ = self.store.list_objects(res, target.namespace, matcher)
            policy = _propagation(res, query, body, warnings)
            for item in items:
                self.store.delete(
                    res,
                    item["metadata"].get("namespace", ""),
                    item["metadata"]["name"],
                    propagation=policy,
                    dry_run=dry_run,
                )
            _, rv = self.store.list_objects(res, target.namespace, lambda o: False)
            return 200, list_body(res, items, rv)
        if not name:
            raise ApiError(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            )
        if sub == "scale":
            return self._scale(method, target, headers, body, dry_run)
        if method == "GET":
            return 200, self.store.get(res, ns, name)
        if method == "PUT":
            return 200, self.store.update(
                res, ns, name, _json(body), subresource=sub, dry_run=dry_run
            )
        if method == "PATCH":
            kind = headers.get("Content-Type", "")
            return 200, self.store.patch(
                res, ns, name, kind, body, subresource=sub, dry_run=dry_run
            )
        if method == "DELETE":
            policy = _propagation(res, query, body, warnings)
            deleted = self.store.delete(res, ns, name, propagation=policy, dry_run=dry_run)
            if res.delete_returns_object:
                return 200, deleted
            details = {"name": name, "kind": res.plural, "uid": deleted["metadata"]["uid"]}
            if res.group:
                details["group"] = res.group
            status = {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": details,
            }
            return 200, status
        raise ApiError(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )

    def _scale(
        self, method: str, target: Route, headers: Any, body: bytes, dry_run: bool
    ) -> tuple[int, dict[str, Any]]:
        res, ns, name = target.res, target.namespace or "", target.name
        current = self.store.get(res, ns, name)
        if method == "GET":
            return 200, scale_of(current)
        if method == "PUT":
            wanted = _json(body)
        elif method == "PATCH":
            wanted = apply_patch(headers.get("Content-Type", ""), scale_of(current), body)
        else:
            raise ApiError(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            )
        replicas = (wanted.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise ApiError(
                422,
                "Invalid",
                f'Scale.autoscaling "{name}" is invalid: spec.replicas: Invalid value: {replicas}: must be greater than or equal to 0',
            )
        current["spec"]["replicas"] = replicas
        current["metadata"]["resourceVersion"] = (wanted.get("metadata") or {}).get(
            "resourceVersion"
        ) or current["metadata"]["resourceVersion"]
        return 200, scale_of(self.store.update(res, ns, name, current, dry_run=dry_run))

    def _watch(
        self, res: Resource, namespace: str | None, matcher: Any, query: dict[str, str]
    ) -> Iterator[dict[str, Any]]:
        rv_text = query.get("resourceVersion", "")
        bookmarks = query.get("allowWatchBookmarks") == "true"
        deadline = time.monotonic() + float(query.get("timeoutSeconds") or DEFAULT_WATCH_SECONDS)
        initial = query.get("sendInitialEvents") == "true" or rv_text in ("", "0")
        if initial:
            items, rv = self.store.list_objects(res, namespace, matcher)
        else:
            try:
                rv = int(rv_text)
            except ValueError:
                raise bad_request(f"invalid resource version: {rv_text!r}") from None
            self.store.events_after(rv, 0)  # 410 now, before the stream starts
            items = []

        def stream() -> Iterator[dict[str, Any]]:
            nonlocal rv
            for item in items:
                yield {"type": "ADDED", "object": item}
            if query.get("sendInitialEvents") == "true" and bookmarks:
                yield {
                    "type": "BOOKMARK",
                    "object": {
                        "kind": res.kind,
                        "apiVersion": res.api_version,
                        "metadata": {
                            "resourceVersion": str(rv),
                            "annotations": {"k8s.io/initial-events-end": "true"},
                        },
                    },
                }
            while not self.closing.is_set() and time.monotonic() < deadline:
                events = self.store.events_after(rv, min(1.0, deadline - time.monotonic()))
                for event in events:
                    rv = event.rv
                    out = _visible(event, res, namespace, matcher)
                    if out is not None:
                        yield out

        return stream()


def _visible(
    event: Event, res: Resource, namespace: str | None, matcher: Any
) -> dict[str, Any] | None:
    """The event a watcher of (res, namespace, selectors) sees, or None."""
    if event.res != res:
        return None
    if namespace is not None and event.obj["metadata"].get("namespace", "") != namespace:
        return None
    now_in = matcher(event.obj)
    if event.type == "MODIFIED" and event.old is not None:
        was_in = matcher(event.old)
        if now_in and not was_in:
            return {"type": "ADDED", "object": event.obj}
        if was_in and not now_in:
            return {"type": "DELETED", "object": event.obj}
    return {"type": event.type, "object": event.obj} if now_in else None


def _as_tables(res: Resource, events: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Watch events whose objects are one-row Tables (`kubectl get --watch`)."""
    for event in events:
        if event["type"] != "BOOKMARK":
            obj = event["object"]
            rv = str(obj["metadata"].get("resourceVersion", ""))
            event = {"type": event["type"], "object": tables.table(res, [obj], rv)}
        yield event


def _propagation(res: Resource, query: dict[str, str], body: bytes, warnings: list[str]) -> str:
    """A delete's propagation policy: asked (query or DeleteOptions, the deprecated
    orphanDependents too), else the resource's default: Orphan for batch/v1 Jobs, with the
    real server's warning."""
    options = _json(body) if body.strip() else {}
    policy = query.get("propagationPolicy") or options.get("propagationPolicy")
    orphan = query.get("orphanDependents") or options.get("orphanDependents")
    if policy:
        return str(policy)
    if orphan is not None:
        return "Orphan" if str(orphan).lower() == "true" else "Background"
    if res.kind == "Job":
        warnings.append(ORPHAN_WARNING)
        return "Orphan"
    return "Background"


def _bearer(header: str | None, token: str) -> bool:
    # The API server's bearer token authenticator takes the scheme in any case (the Python
    # client's in-cluster loader sends "bearer").
    scheme, _, value = (header or "").partition(" ")
    return scheme.lower() == "bearer" and value.strip() == token


def _access_review(body: bytes) -> dict[str, Any]:
    try:
        return protobuf.access_review(body)
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        raise bad_request(f"the protobuf body could not be read: {exc}") from None


def _json(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise bad_request(f"the body of the request is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise bad_request("the body of the request is not a JSON object")
    return value


def _handler(server: ApiServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            del format, args

        def _send(
            self, status: int, payload: dict[str, Any], warnings: tuple[str, ...] = ()
        ) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            for warning in warnings:
                self.send_header("Warning", f'299 - "{warning}"')
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _send_text(self, status: int, text: str) -> None:
            data = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _stream(self, events: Iterator[dict[str, Any]]) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                self.wfile.flush()
                for event in events:
                    data = json.dumps(event).encode() + b"\n"
                    self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass
            self.close_connection = True

        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            split = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(split.query).items()}
            try:
                if server.token and not _bearer(self.headers.get("Authorization"), server.token):
                    raise ApiError(401, "Unauthorized", "Unauthorized")
                protobuf = "protobuf" in (self.headers.get("Content-Type") or "") and body
                if split.path == access.REVIEW_PATH and self.command == "POST":
                    review = _access_review(body) if protobuf else _json(body)
                    self._send(201, server.access.review(review))
                    return
                if protobuf:
                    raise ApiError(415, "UnsupportedMediaType", "the simulator only speaks JSON")
                if split.path.rstrip("/") in ("/healthz", "/readyz", "/livez"):
                    self._send_text(200, "ok")
                    return
                target = route(split.path)
                if target is None:
                    raise NOT_FOUND
                if isinstance(target, dict):
                    if self.command != "GET":
                        raise ApiError(
                            405,
                            "MethodNotAllowed",
                            "the server does not allow this method on the requested resource",
                        )
                    self._send(200, target)
                    return
                rbac_verb = access.verb(self.command, target.name, query)
                server.access.check(
                    rbac_verb, target.res, target.sub, target.namespace, target.name
                )
                if target.sub == "log":
                    server.store.get(target.res, target.namespace or "", target.name)
                    self._send_text(200, server.logs(target.namespace or "", target.name, query))
                    return
                warnings: list[str] = []
                answer = server.handle(self.command, target, query, self.headers, body, warnings)
                as_table = (
                    self.command == "GET"
                    and not target.sub
                    and tables.wants_table(self.headers.get("Accept") or "")
                )
                if isinstance(answer, tuple):
                    status, payload = answer
                    if as_table:
                        items = payload.get("items", [payload])
                        rv = str(payload["metadata"].get("resourceVersion", ""))
                        payload = tables.table(target.res, items, rv)
                    self._send(status, payload, tuple(warnings))
                elif as_table:
                    self._stream(_as_tables(target.res, answer))
                else:
                    self._stream(answer)
            except ApiError as exc:
                self._send(exc.code, exc.body)
            except Exception as exc:  # a simulator bug: a 500 for the client, kept for the test
                server.errors.append(f"{self.command} {self.path}: {type(exc).__name__}: {exc}")
                self._send(500, ApiError(500, "InternalError", f"simulator bug: {exc}").body)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

    return Handler
