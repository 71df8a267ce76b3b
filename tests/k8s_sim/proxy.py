"""A Service-like TCP proxy: one stable 127.0.0.1 port per Deployment that forwards each
connection to one of its ready Pods (round robin), as a ClusterIP Service with a port
forward would. No ready Pod: the connection is closed at once."""

from __future__ import annotations

import contextlib
import itertools
import socket
import socketserver
import threading
from collections.abc import Callable


def _pipe(source: socket.socket, target: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            target.sendall(data)
    with contextlib.suppress(OSError):
        target.shutdown(socket.SHUT_WR)


class ServiceProxy:
    """Listens on a free 127.0.0.1 port; `backends()` gives the ready Pods' host ports."""

    def __init__(self, backends: Callable[[], list[int]]) -> None:
        self._backends = backends
        self._turn = itertools.count()
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                ports = proxy._backends()
                if not ports:
                    return
                port = ports[next(proxy._turn) % len(ports)]
                try:
                    upstream = socket.create_connection(("127.0.0.1", port), timeout=5)
                except OSError:
                    return
                upstream.settimeout(None)
                back = threading.Thread(target=_pipe, args=(upstream, self.request), daemon=True)
                back.start()
                _pipe(self.request, upstream)
                back.join(timeout=60)
                upstream.close()

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
