"""A fault-injecting HTTP proxy in front of the real S3 server (not a simulator).

Requests pass through unchanged (the Host header too, so SigV4 signatures stay valid)
except those `fail` selects, which get an S3 error instead: a listing that fails half-way
(500 after its first page), or a store that is full (MinIO's 507 XMinioStorageFull; a full
SeaweedFS only answers after a minute of retries).
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

INTERNAL_ERROR = (500, "InternalError", "injected by the test proxy")
# What MinIO answers when its drives are full.
STORAGE_FULL = (
    507,
    "XMinioStorageFull",
    "Storage backend has reached its minimum free drive threshold. Please delete a few "
    "objects to proceed.",
)


@contextmanager
def fault_proxy(
    upstream: str,
    fail: Callable[[str, str], bool],
    error: tuple[int, str, str] = INTERNAL_ERROR,
    *,
    hang_up: bool = False,
) -> Iterator[str]:
    """Serve a proxy to `upstream`; `fail(method, path_and_query)` picks requests that get
    `error` (HTTP status, S3 error code, message) instead of the server's answer.

    hang_up: close each connection after its answer without saying so, as a server does
    with a keep-alive connection it found idle too long."""
    target = urlsplit(upstream)
    status, code, message = error
    body_xml = (
        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
        f"<Message>{message}</Message></Error>"
    ).encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            if fail(self.command, self.path):
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body_xml)))
                self.end_headers()
                self.wfile.write(body_xml)
                return
            conn = http.client.HTTPConnection(target.hostname or "", target.port, timeout=60)
            try:
                headers = {k: v for k, v in self.headers.items()}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            finally:
                conn.close()
            self.send_response(resp.status)
            head = self.command == "HEAD"
            skip = {"transfer-encoding", "connection"} | (set() if head else {"content-length"})
            for k, v in resp.getheaders():
                if k.lower() not in skip:
                    self.send_header(k, v)
            if not head:
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if not head:
                self.wfile.write(data)
            if hang_up:
                self.close_connection = True

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        def log_message(self, format: str, *args: object) -> None:
            del format, args

    with serve(Handler) as url:
        yield url


@contextmanager
def serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve `handler` on a free loopback port in a thread; its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
