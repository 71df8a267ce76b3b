"""A fault-injecting HTTP proxy in front of the real S3 server (not a simulator).

Requests pass through unchanged (the Host header too, so SigV4 signatures stay valid)
except those `fail` selects, which get a 500 InternalError as S3 would send it. Used to
make a listing fail half-way: the first page succeeds, the next ones fail.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

ERROR = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>'
    b"<Message>injected by the test proxy</Message></Error>"
)


@contextmanager
def fault_proxy(upstream: str, fail: Callable[[str, str], bool]) -> Iterator[str]:
    """Serve a proxy to `upstream`; `fail(method, path_and_query)` picks requests to fail."""
    target = urlsplit(upstream)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            if fail(self.command, self.path):
                self.send_response(500)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(ERROR)))
                self.end_headers()
                self.wfile.write(ERROR)
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

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        def log_message(self, format: str, *args: object) -> None:
            del format, args

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
