"""Pods without containers, for tests that need no Docker engine: each Pod "runs" as an
in-process HTTP server answering any path with `{"status": "ok", "version": <image tag>}`,
Ready as soon as its readiness probe (if any) answers, which it does unless the image
matches one of the simulator's `never_ready` patterns."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.k8s_sim.pods import PodRunner
from tests.k8s_sim.store import now


def image_tag(image: str) -> str:
    last = image.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else "latest"


class FakePodRunner(PodRunner):
    """A Pod without a container: an in-process HTTP server answering its image's tag; a
    run-to-completion Pod (restartPolicy Never or OnFailure, as a Job's) succeeds at once."""

    def _run(self) -> None:
        if self.spec.get("restartPolicy", "Always") != "Always":
            self.started_at = now()
            self.waiting = None
            self.finished(0)
            self.stopped.wait()
            return
        tag = image_tag(self.container["image"])
        body = json.dumps({"status": "ok", "version": tag}).encode()

        class Answer(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                del format, args

        server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
        server.daemon_threads = True
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        try:
            port = int(server.server_address[1])
            for p in [*(int(x["containerPort"]) for x in self.container.get("ports") or []), 8080]:
                self.host_ports[p] = port
            self.pod_ip = "127.0.0.1"
            self.started_at = now()
            self.waiting = None
            self.publish()
            while not self.stopped.is_set():
                if self.ready != self.probe_ok():
                    self.ready = not self.ready
                    self.publish()
                self.stopped.wait(self.sim.probe_interval)
        finally:
            server.shutdown()
            server.server_close()
