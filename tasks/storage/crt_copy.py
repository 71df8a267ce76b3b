"""Same-endpoint CopyObject requests in bulk through awscrt's own S3 client.

The CRT signs, pools connections and retries by itself, at a third of boto3's CPU per
copy: a mirror's bare copies (same bytes, same metadata) go this way.
"""

from __future__ import annotations

import os
import re
import urllib.request
from concurrent.futures import Future
from urllib.parse import quote, urlsplit
from xml.etree import ElementTree

from awscrt import auth, http, io, s3
from awscrt.exceptions import AwsCrtError

from blocks.errors import SlipwayError
from tasks.storage.locations import S3Location

# As boto3's standard mode with 5 attempts.
RETRIES = s3.S3RetryConfig(max_retries=4)
# Bucket names that work as a host name label (no dots: they break TLS wildcards).
VIRTUAL_HOST_BUCKET = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")


def direct(dst: S3Location) -> bool:
    """Whether the CRT reaches the store as boto3 does: it takes no proxy from the
    environment here, so a store behind one stays with boto3."""
    host = urlsplit(dst.client.meta.endpoint_url).hostname or ""
    proxies = urllib.request.getproxies()
    return not (proxies.get("https") or proxies.get("http")) or bool(
        urllib.request.proxy_bypass(host)
    )


def _credentials(dst: S3Location) -> auth.AwsCredentialsProvider:
    """The keys boto3 signs with for this store, frozen for this batch."""
    found = dst.settings.credentials().get_frozen_credentials()
    return auth.AwsCredentialsProvider.new_static(found.access_key, found.secret_key, found.token)


class CrtCopies:
    """One S3 client for a batch of bare copies between two buckets on one endpoint."""

    def __init__(self, src: S3Location, dst: S3Location) -> None:
        self.src, self.dst = src, dst
        # Where and how boto3 sends this store's requests.
        region = dst.client.meta.region_name
        signing = s3.create_default_s3_signing_config(
            region=region, credential_provider=_credentials(dst)
        )
        url = urlsplit(dst.client.meta.endpoint_url)
        tls = url.scheme == "https"
        bucket = dst.settings.bucket
        # boto3 is configured for path style with an endpoint URL, virtual hosts on AWS.
        if not dst.settings.endpoint_url and VIRTUAL_HOST_BUCKET.match(bucket):
            self.host, self.path = f"{bucket}.{url.netloc}", f"{url.path.rstrip('/')}/"
        else:
            self.host, self.path = url.netloc, f"{url.path.rstrip('/')}/{quote(bucket)}/"
        tls_options = None
        if tls and (ca_bundle := os.environ.get("AWS_CA_BUNDLE")):  # as boto3 honours it
            context = io.TlsContextOptions()
            context.override_default_trust_store_from_path(None, ca_bundle)
            tls_options = io.ClientTlsContext(context).new_connection_options()
        self.client = s3.S3Client(
            region=region,
            signing_config=signing,
            tls_mode=s3.S3RequestTlsMode.ENABLED if tls else s3.S3RequestTlsMode.DISABLED,
            tls_connection_options=tls_options,
            retry_config=RETRIES,
        )
        self._requests: list[s3.S3Request] = []

    def close(self) -> None:
        """Cancel what is still running and wait for it (use with contextlib.closing)."""
        for request in self._requests:
            if not request.finished_future.done():
                request.cancel()
        for request in self._requests:
            request.finished_future.exception()  # wait: a cancel ends it promptly
        self._requests.clear()

    def copy(self, key: str, size: int, etag: str = "") -> Future[int]:
        """Start one CopyObject keeping the metadata; the future gives `size` once done,
        or a SlipwayError naming the key. `etag`: the copy's ETag must be this one."""
        source = quote(f"{self.src.settings.bucket}/{self.src.full_key(key)}", safe="/~")
        request = http.HttpRequest(
            "PUT",
            self.path + quote(self.dst.full_key(key), safe="/~"),
            http.HttpHeaders(
                [("Host", self.host), ("x-amz-copy-source", source), ("Content-Length", "0")]
            ),
        )
        body = bytearray()
        result: Future[int] = Future()

        def on_body(chunk: bytes, **kwargs: object) -> None:
            body.extend(chunk)

        def done(finished: Future[None]) -> None:
            try:
                finished.result()
                copied = _etag(bytes(body))
                if etag and copied != etag:
                    raise SlipwayError(
                        f"{key!r} changed in {self.src.describe()} during the mirror (ETag "
                        f"{copied or 'missing'}, listed {etag}): run the mirror again"
                    )
                result.set_result(size)
            except SlipwayError as exc:
                result.set_exception(exc)
            except Exception as exc:  # the CRT's error: this object failed, the rest go on
                result.set_exception(self._failure(key, exc))

        crt = self.client.make_request(
            type=s3.S3RequestType.DEFAULT,
            operation_name="CopyObject",  # the CRT then fails a 200 carrying an <Error>
            request=request,
            on_body=on_body,
        )
        self._requests.append(crt)
        crt.finished_future.add_done_callback(done)
        return result

    def _failure(self, key: str, exc: Exception) -> SlipwayError:
        where = f"{key!r} was not copied to {self.dst.describe()}"
        if isinstance(exc, s3.S3ResponseError):
            code, message = _error(exc.body or b"")
            detail = f"HTTP {exc.status_code}" + (f" {code}" if code else "")
            return SlipwayError(f"{where}: {detail}" + (f": {message}" if message else ""))
        if isinstance(exc, AwsCrtError):
            return SlipwayError(f"{where}: {exc.message} ({exc.name}), after its retries")
        return SlipwayError(f"{where}: {type(exc).__name__}: {exc}")


def _xml(body: bytes) -> ElementTree.Element | None:
    try:
        return ElementTree.fromstring(body)  # noqa: S314 - the configured store's answer, as botocore parses it
    except ElementTree.ParseError:
        return None


def _etag(body: bytes) -> str:
    """The ETag in a CopyObjectResult, unquoted ('' if none)."""
    root = _xml(body)
    found = None if root is None else root.find("{*}ETag")
    return (found.text or "").strip('"') if found is not None else ""


def _error(body: bytes) -> tuple[str, str]:
    """Code and message of an S3 <Error> body."""
    root = _xml(body)
    if root is None:
        return "", ""
    return root.findtext("{*}Code") or "", root.findtext("{*}Message") or ""
