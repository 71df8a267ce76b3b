"""The simulator's HTTP layer: the AWS JSON 1.1 protocol on 127.0.0.1.

`POST /` with `X-Amz-Target: AmazonEC2ContainerServiceV20141113.<Operation>` and a JSON
body; the answer is the operation's JSON (`Content-Type: application/x-amz-json-1.1`,
`x-amzn-RequestId`), or HTTP 400 `{"__type": ..., "message": ...}` as the service answers
errors, so botocore raises `client.exceptions.<Type>`. Any `Authorization` (SigV4) is
accepted and not verified.
"""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.ecs_sim.operations import OPERATIONS
from tests.ecs_sim.store import ACCOUNT, EcsError, Store

TARGET_PREFIX = "AmazonEC2ContainerServiceV20141113."
CONTENT_TYPE = "application/x-amz-json-1.1"


class ApiServer:
    """The HTTP server on a free 127.0.0.1 port, answering from `store`."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.denied: set[str] = set()  # operations answered AccessDeniedException
        self.calls: list[str] = []  # operations called, in order (for tests)
        # What CloudTrail would show: each call that succeeded, with its request, in order.
        self.trail: list[tuple[str, dict[str, Any]]] = []
        self.errors: list[str] = []  # unexpected exceptions (simulator bugs)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
            name="ecs-sim-http",
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def answer(self, target: str, body: bytes) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON answer) of one call."""
        operation = target.removeprefix(TARGET_PREFIX)
        handler = OPERATIONS.get(operation) if target.startswith(TARGET_PREFIX) else None
        if handler is None:
            return 400, {"__type": "UnknownOperationException", "message": f"{target}"}
        try:
            request = json.loads(body or b"{}")
            if not isinstance(request, dict):
                raise ValueError("not an object")
        except ValueError:
            return 400, {"__type": "SerializationException", "message": "Malformed JSON."}
        self.calls.append(operation)
        if operation in self.denied:
            message = (
                f"User: arn:aws:iam::{ACCOUNT}:user/slipway is not authorized to perform: "
                f"ecs:{operation} on resource: * because no identity-based policy allows "
                f"the ecs:{operation} action"
            )
            return 400, {"__type": "AccessDeniedException", "message": message}
        try:
            with self.store.lock:
                answer = handler(self.store, request)
                self.trail.append((operation, request))
                return 200, answer
        except EcsError as exc:
            return 400, {"__type": exc.kind, "message": exc.message}
        except (KeyError, TypeError, ValueError) as exc:
            return 400, {"__type": "InvalidParameterException", "message": str(exc)}
        except Exception as exc:  # a simulator bug: visible to the test
            self.errors.append(f"{operation}: {type(exc).__name__}: {exc}")
            return 500, {"__type": "ServerException", "message": str(exc)}


def _handler(api: ApiServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            status, answer = api.answer(self.headers.get("X-Amz-Target", ""), body)
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
            self.end_headers()
            self.wfile.write(data)

    return Handler
