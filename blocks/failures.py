"""One line for any failure: `<what> at <where>: <fix>`, whichever library raised it.

Slipway's own code words its errors (`SlipwayError`) where it knows the context: the
bucket, the database, the option. This is the one place that words everything else: an
exception of boto3, psycopg, the Docker SDK, paramiko or httpx that reached the command
line, or anything unexpected. A library is looked up in `sys.modules`, never imported: an
exception of a library that was never loaded cannot be raised.
"""

from __future__ import annotations

import os
import sys
from typing import Any
from urllib.parse import urlsplit

from blocks.errors import SlipwayError
from blocks.text import error_line, one_line


def explain(exc: BaseException) -> str:
    """The one-line message for `exc`, never empty: worded by Slipway, by the table below,
    or as an unexpected failure to report."""
    if isinstance(exc, SlipwayError):
        return one_line(str(exc), None) or type(exc).__name__
    for explainer in (_boto, _psycopg, _docker, _paramiko, _httpx, _os):
        if (text := explainer(exc)) is not None:
            return one_line(text, None)
    return unexpected(exc)


def unexpected(exc: BaseException) -> str:
    """The message for a failure nothing foresaw."""
    return (
        f"unexpected {type(exc).__name__}: {error_line(exc, 300)}: run again with -v for "
        "details, and report it"
    )


def _module(name: str) -> Any:
    return sys.modules.get(name)


def _origin(url: str | None) -> str:
    """`scheme://host:port` of a URL: where a request went, without its path or query."""
    if not url:
        return "?"
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else url


def _boto(exc: BaseException) -> str | None:
    errors = _module("botocore.exceptions")
    if errors is None:
        return None
    if isinstance(exc, errors.NoCredentialsError | errors.PartialCredentialsError):
        return (
            "no S3 credentials found at the S3 endpoint: set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (SLIPWAY_SOURCE_* for the app's side) or the block's keys"
        )
    if isinstance(exc, errors.ConnectionError | errors.SSLError):
        endpoint = _origin(getattr(exc, "kwargs", {}).get("endpoint_url"))
        return (
            f"cannot reach the S3 endpoint at {endpoint}: check its URL (AWS_ENDPOINT_URL_S3, "
            "SLIPWAY_SOURCE_ENDPOINT_URL or the block's endpoint_url) and the network"
        )
    if isinstance(exc, errors.ClientError):
        error = exc.response.get("Error", {})
        code, message = str(error.get("Code", "")), str(error.get("Message", ""))
        where = f"S3 ({exc.operation_name})"
        if code == "NoSuchBucket":
            bucket = error.get("BucketName", "")
            return f"bucket {bucket!r} does not exist at {where}: create it or fix its URL"
        if code in {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403"}:
            return (
                f"S3 refused the credentials ({code}) at {where}: check the access key and secret"
            )
        return f"S3 answered {code} {message} at {where}: check the store and its settings"
    if isinstance(exc, errors.BotoCoreError):
        return f"S3 request failed ({error_line(exc)}): check the store's settings and the network"
    return None


def _psycopg(exc: BaseException) -> str | None:
    psycopg = _module("psycopg")
    if psycopg is None or not isinstance(exc, psycopg.Error):
        return None
    text = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, psycopg.OperationalError):
        return (
            f"cannot use PostgreSQL ({text}) at the database: check DATABASE_URL (or the "
            "block), PGPASSWORD and that the server runs"
        )
    return f"PostgreSQL refused a statement ({text}) at the database: check the database's state"


def _docker(exc: BaseException) -> str | None:
    errors = _module("docker.errors")
    if errors is None or not isinstance(exc, errors.DockerException):
        return None
    where = os.environ.get("DOCKER_HOST") or "the local Docker socket"
    return (
        f"the Docker engine failed ({error_line(exc, 160)}) at {where}: check that it runs, "
        "and DOCKER_HOST or the target's docker_host"
    )


def _paramiko(exc: BaseException) -> str | None:
    paramiko = _module("paramiko")
    if paramiko is None or not isinstance(exc, paramiko.SSHException):
        return None
    if isinstance(exc, paramiko.AuthenticationException):
        return (
            f"SSH refused the login ({error_line(exc)}) at the target's host: check its user "
            "and key"
        )
    return f"SSH failed ({error_line(exc)}) at the target's host: check the host and its keys"


def _httpx(exc: BaseException) -> str | None:
    httpx = _module("httpx")
    if httpx is None or not isinstance(exc, httpx.HTTPError):
        return None
    try:
        url = str(exc.request.url)
    except RuntimeError:  # an error raised without its request
        url = ""
    api = _prefect_api_url()
    prefect = bool(api) and url.startswith(api.rstrip("/"))
    if isinstance(exc, httpx.HTTPStatusError):
        status = exc.response.status_code
        if prefect:
            return f"the Prefect API answered {status} at {api}: check the server and its logs"
        return f"HTTP {status} at {_origin(url)}: check the address and the service"
    if prefect:
        return (
            f"cannot reach the Prefect API ({error_line(exc)}) at {api}: start it, or fix "
            "PREFECT_API_URL"
        )
    return f"cannot reach {_origin(url)} ({error_line(exc)}): check the address and the network"


def _prefect_api_url() -> str:
    if url := os.environ.get("PREFECT_API_URL"):
        return url
    settings = _module("prefect.settings")
    value = settings.PREFECT_API_URL.value() if settings is not None else None
    return str(value or "")


def _os(exc: BaseException) -> str | None:
    if not isinstance(exc, OSError):
        return None
    reason = exc.strerror or error_line(exc)
    if exc.filename is not None:
        return f"{reason} at {exc.filename}: check the path and its permissions"
    return f"{reason} at this machine: check the disk, the network and the permissions"
