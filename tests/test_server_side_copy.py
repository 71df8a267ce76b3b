"""Slipway's own CopyObject request, against the real S3 server (and a fault proxy)."""

from __future__ import annotations

import secrets
import socket
import threading

import pytest
from pydantic import SecretStr

from blocks.errors import SlipwayError
from tasks import server_side_copy
from tasks.object_locations import S3Location
from tasks.server_side_copy import CopyJob, PathStyleCopier
from tests.harness.s3 import S3Info
from tests.s3_fault_proxy import fault_proxy

pytestmark = [pytest.mark.s3]

KEYS = ["plain.txt", "with space/ünïcødé+%20&?=.txt", "deep/" * 30 + "leaf"]


def buckets(s3: S3Info) -> tuple[str, str]:
    src, dst = f"src-{secrets.token_hex(4)}", f"dst-{secrets.token_hex(4)}"
    for bucket in (src, dst):
        s3.client().create_bucket(Bucket=bucket)
    return src, dst


def test_copies_bytes_type_and_metadata_of_awkward_keys(s3: S3Info) -> None:
    src, dst = buckets(s3)
    client = s3.client()
    for key in KEYS:
        client.put_object(
            Bucket=src, Key=key, Body=key.encode() * 3, ContentType="text/x-a", Metadata={"k": "v"}
        )
    location = S3Location(s3.storage(dst, "copy"))
    assert isinstance(location._copier, PathStyleCopier)  # the lean request, not boto3's
    for key in KEYS:
        location.copy_from(S3Location(s3.storage(src)), key, key, None)
        got = client.get_object(Bucket=dst, Key=f"copy/{key}")
        assert got["Body"].read() == key.encode() * 3
        assert got["ContentType"] == "text/x-a"
        assert got["Metadata"] == {"k": "v"}


def test_refusals_are_one_line_errors_and_copy_nothing(s3: S3Info) -> None:
    src, dst = buckets(s3)
    s3.client().put_object(Bucket=src, Key="a", Body=b"a")
    copier = PathStyleCopier(s3.storage(dst))
    with pytest.raises(SlipwayError, match="NoSuchKey"):
        copier.copy(src, "missing", dst, "b")
    wrong = s3.storage(dst).model_copy(update={"secret_access_key": SecretStr("wrong-secret")})
    with pytest.raises(SlipwayError, match="refused the credentials") as refused:
        PathStyleCopier(wrong).copy(src, "a", dst, "b")
    assert "wrong-secret" not in str(refused.value)
    assert "\n" not in str(refused.value)
    assert s3.client().list_objects_v2(Bucket=dst).get("KeyCount") == 0


def test_no_credentials_anywhere_is_one_line(s3: S3Info, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    anonymous = s3.storage("any").model_copy(
        update={"access_key_id": None, "secret_access_key": None}
    )
    with pytest.raises(SlipwayError, match="no S3 credentials"):
        PathStyleCopier(anonymous).copy("any", "a", "any", "b")


@pytest.mark.parametrize(
    "error",
    [
        (503, "SlowDown", "Please reduce your request rate."),
        (500, "InternalError", "We encountered an internal error."),
        (200, "InternalError", "A 200 answer can still carry an error."),
    ],
)
def test_transient_errors_are_retried(s3: S3Info, error: tuple[int, str, str]) -> None:
    src, dst = buckets(s3)
    s3.client().put_object(Bucket=src, Key="a", Body=b"payload")
    copies: list[str] = []
    lock = threading.Lock()

    def first_two_copies_fail(method: str, path: str) -> bool:
        if method != "PUT":
            return False
        with lock:
            copies.append(path)
            return len(copies) <= 2

    with fault_proxy(s3.endpoint_url, first_two_copies_fail, error) as proxy:
        copier = PathStyleCopier(s3.storage(dst).model_copy(update={"endpoint_url": proxy}))
        copier.copy(src, "a", dst, "b")
    assert len(copies) == 3
    assert s3.client().get_object(Bucket=dst, Key="b")["Body"].read() == b"payload"


def test_a_connection_the_server_closed_is_replaced(s3: S3Info) -> None:
    src, dst = buckets(s3)
    for key in ("a", "b", "c"):
        s3.client().put_object(Bucket=src, Key=key, Body=key.encode())
    forwarded: list[str] = []

    def count(method: str, path: str) -> bool:
        forwarded.append(f"{method} {path}")
        return False

    with fault_proxy(s3.endpoint_url, count, hang_up=True) as proxy:
        copier = PathStyleCopier(s3.storage(dst).model_copy(update={"endpoint_url": proxy}))
        for key in ("a", "b", "c"):  # one thread: each copy finds its connection closed
            copier.copy(src, key, dst, key)
    assert forwarded == [f"PUT /{dst}/{key}" for key in ("a", "b", "c")]
    for key in ("a", "b", "c"):
        assert s3.client().get_object(Bucket=dst, Key=key)["Body"].read() == key.encode()


def test_a_lasting_error_gives_up_after_five_attempts(s3: S3Info) -> None:
    src, dst = buckets(s3)
    s3.client().put_object(Bucket=src, Key="a", Body=b"payload")
    copies: list[str] = []

    def always(method: str, path: str) -> bool:
        copies.append(path)
        return method == "PUT"

    error = (200, "InternalError", "still failing")
    with fault_proxy(s3.endpoint_url, always, error) as proxy:
        copier = PathStyleCopier(s3.storage(dst).model_copy(update={"endpoint_url": proxy}))
        with pytest.raises(SlipwayError, match="InternalError still failing"):
            copier.copy(src, "a", dst, "b")
    assert len(copies) == 5
    assert s3.client().list_objects_v2(Bucket=dst).get("KeyCount") == 0


def test_an_unreachable_endpoint_is_one_line(s3: S3Info) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    nowhere = s3.storage("any").model_copy(update={"endpoint_url": f"http://127.0.0.1:{port}"})
    with pytest.raises(SlipwayError, match="cannot reach the S3 endpoint"):
        PathStyleCopier(nowhere).copy("any", "a", "any", "b")


# The batch: first attempts on awscrt's client; what it does not finish, it hands back.


def batch_source(s3: S3Info, count: int) -> tuple[str, list[CopyJob], dict[str, bytes]]:
    """A source bucket with KEYS and `count` numbered objects, and the jobs copying them."""
    src, dst = buckets(s3)
    bodies = {key: key.encode() * 3 for key in KEYS}
    bodies.update({f"n/{i}.bin": secrets.token_bytes(100 + i) for i in range(count)})
    client = s3.client()
    for key, body in bodies.items():
        client.put_object(
            Bucket=src, Key=key, Body=body, ContentType="text/x-a", Metadata={"k": "v"}
        )
    return dst, [CopyJob(src, key, dst, f"copy/{key}") for key in bodies], bodies


def copied(s3: S3Info, dst: str) -> dict[str, bytes]:
    client = s3.client()
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=dst, Prefix="copy/")
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    return {k[5:]: client.get_object(Bucket=dst, Key=k)["Body"].read() for k in keys}


def test_a_batch_copies_awkward_keys_as_single_copies_do(s3: S3Info) -> None:
    dst, jobs, bodies = batch_source(s3, 60)
    done: list[int] = []
    left = PathStyleCopier(s3.storage(dst)).copy_many(jobs, done.append)
    assert left == []
    assert sorted(done) == list(range(len(jobs)))
    assert copied(s3, dst) == bodies
    for key in KEYS:
        got = s3.client().head_object(Bucket=dst, Key=f"copy/{key}")
        assert got["ContentType"] == "text/x-a"
        assert got["Metadata"] == {"k": "v"}


@pytest.mark.parametrize(
    "error",
    [
        (503, "SlowDown", "Please reduce your request rate."),
        (200, "InternalError", "A 200 answer can still carry an error."),
    ],
)
def test_a_batch_hands_back_what_failed(s3: S3Info, error: tuple[int, str, str]) -> None:
    dst, jobs, bodies = batch_source(s3, 30)

    def sevens(method: str, path: str) -> bool:
        return method == "PUT" and "7.bin" in path

    done: list[int] = []
    with fault_proxy(s3.endpoint_url, sevens, error) as proxy:
        copier = PathStyleCopier(s3.storage(dst).model_copy(update={"endpoint_url": proxy}))
        left = copier.copy_many(jobs, done.append)
    failed = [i for i, job in enumerate(jobs) if job.src_key.endswith("7.bin")]
    assert failed  # n/7.bin, n/17.bin, n/27.bin
    assert left == failed
    assert sorted(done + left) == list(range(len(jobs)))
    assert copied(s3, dst) == {k: b for k, b in bodies.items() if not k.endswith("7.bin")}


def test_a_copy_that_hangs_loses_its_connection_and_is_handed_back(
    s3: S3Info, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_side_copy, "READ_TIMEOUT", 3)  # others take far less
    dst, jobs, _ = batch_source(s3, 10)
    release = threading.Event()

    def hang_on_3(method: str, path: str) -> bool:
        if method == "PUT" and path.endswith("/3.bin"):
            release.wait(30)  # the server never answers in time
        return False

    done: list[int] = []
    with fault_proxy(s3.endpoint_url, hang_on_3) as proxy:
        copier = PathStyleCopier(s3.storage(dst).model_copy(update={"endpoint_url": proxy}))
        left = copier.copy_many(jobs, done.append)
        release.set()
    assert [jobs[i].src_key for i in left] == ["n/3.bin"]
    assert sorted(done + left) == list(range(len(jobs)))


def test_a_stopped_batch_begins_nothing_more(s3: S3Info) -> None:
    dst, jobs, bodies = batch_source(s3, 200)
    stop = threading.Event()
    done: list[int] = []

    def on_copied(index: int) -> None:
        done.append(index)
        stop.set()

    left = PathStyleCopier(s3.storage(dst)).copy_many(jobs, on_copied, stop)
    assert left  # stopped before the last
    assert sorted(done + left) == list(range(len(jobs)))
    # What was copied is exactly what was reported: the copies under way finished.
    assert copied(s3, dst) == {jobs[i].src_key: bodies[jobs[i].src_key] for i in done}


def test_a_batch_without_a_server_or_over_tls_hands_everything_back(s3: S3Info) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    jobs = [CopyJob("any", f"{i}", "any", f"b{i}") for i in range(40)]
    for url in (f"http://127.0.0.1:{port}", f"https://127.0.0.1:{port}"):
        nowhere = s3.storage("any").model_copy(update={"endpoint_url": url})
        assert PathStyleCopier(nowhere).copy_many(jobs, lambda i: None) == list(range(40))
