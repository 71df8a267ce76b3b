"""A read-only S3 endpoint whose keys may be anything AWS allows, backed by the real S3 server.

SeaweedFS normalises keys (`a//b` becomes `a/b`, `.` is refused, `dir/` keeps no bytes),
AWS does not. This proxy stores each key K upstream as `any-key/<hex of K>` (hex keeps
prefixes and order) and serves it back as K: listings, GET and HEAD, signed anew with the
server's credentials. Put objects with `stored_key`; read through the proxy with any key.
"""

from __future__ import annotations

import http.client
import re
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit
from xml.sax.saxutils import escape

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.harness.s3 import S3Info
from tests.s3_fault_proxy import serve

STORED = "any-key/"
SIGNING = {"authorization", "x-amz-date", "x-amz-content-sha256", "host", "content-length"}


def stored_key(key: str) -> str:
    """Where the proxy keeps `key` on the real server."""
    return STORED + key.encode().hex()


def _served(stored: str) -> str:
    return bytes.fromhex(stored[len(STORED) :]).decode()


@contextmanager
def any_key_proxy(info: S3Info) -> Iterator[str]:
    """Serve `info`'s server with keys translated both ways; yields the endpoint URL."""
    upstream = urlsplit(info.endpoint_url)
    credentials = Credentials(info.access_key, info.secret_key)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _forward(self) -> None:
            if self.command not in ("GET", "HEAD"):
                self.send_error(405, "read-only")
                return
            path, _, query = self.path.partition("?")
            bucket, slash, key = path.lstrip("/").partition("/")
            params = parse_qsl(query, keep_blank_values=True)
            url_keys = ("encoding-type", "url") in params
            if slash and key:
                path = f"/{bucket}/" + quote(stored_key(unquote(key)), safe="/~")
            prefix = dict(params).get("prefix")
            if "list-type" in dict(params):
                params = [(k, stored_key(v) if k == "prefix" else v) for k, v in params]
                if prefix is None:
                    params.append(("prefix", STORED))
            target = path + ("?" + urlencode(params, quote_via=quote) if params else "")
            headers = {k: v for k, v in self.headers.items() if k.lower() not in SIGNING}
            request = AWSRequest(self.command, info.endpoint_url + target, headers=headers)
            S3SigV4Auth(credentials, "s3", info.region).add_auth(request)
            conn = http.client.HTTPConnection(upstream.hostname or "", upstream.port, timeout=60)
            try:
                conn.request(self.command, target, headers=dict(request.headers.items()))
                resp = conn.getresponse()
                data = resp.read()
            finally:
                conn.close()
            if "list-type" in dict(params) and resp.status == 200:
                data = self._rewrite_listing(data, prefix or "", url_keys)
            self.send_response(resp.status)
            skip = {"transfer-encoding", "connection", "content-length"}
            for k, v in resp.getheaders():
                if k.lower() not in skip:
                    self.send_header(k, v)
            length = resp.getheader("Content-Length") if self.command == "HEAD" else None
            self.send_header("Content-Length", length or str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        @staticmethod
        def _rewrite_listing(data: bytes, prefix: str, url_keys: bool) -> bytes:
            def key(match: re.Match[str]) -> str:
                stored = unquote(match.group(1)) if url_keys else match.group(1)
                served = _served(stored)
                return f"<Key>{quote(served, safe='/') if url_keys else escape(served)}</Key>"

            text = re.sub(r"<Key>(.*?)</Key>", key, data.decode())
            shown = quote(prefix, safe="/") if url_keys else escape(prefix)
            text = re.sub(r"<Prefix>(.*?)</Prefix>", f"<Prefix>{shown}</Prefix>", text)
            return text.encode()

        do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward

        def log_message(self, format: str, *args: object) -> None:
            del format, args

    with serve(Handler) as url:
        yield url
