"""Server-side copies (boto3's CopyObject), against the real S3 server and a fault proxy."""

from __future__ import annotations

import secrets
import socket
import threading

import pytest
from pydantic import SecretStr

from blocks.errors import SlipwayError
from blocks.settings import StorageSettings
from tasks.storage.locations import ObjectMeta, S3Location
from tests.harness.s3 import S3Info
from tests.s3_fault_proxy import fault_proxy

pytestmark = [pytest.mark.s3]

KEYS = ["plain.txt", "with space/ünïcødé+%20&?=.txt", "deep/" * 30 + "leaf"]


def buckets(s3: S3Info) -> tuple[str, str]:
    src, dst = f"src-{secrets.token_hex(4)}", f"dst-{secrets.token_hex(4)}"
    for bucket in (src, dst):
        s3.client().create_bucket(Bucket=bucket)
    return src, dst


def copy(settings: StorageSettings, src: str, src_key: str, dst: str, dst_key: str) -> None:
    """One copy that keeps the source's metadata, as a mirror makes it."""
    S3Location(settings.model_copy(update={"bucket": dst, "prefix": ""})).copy_from(
        S3Location(settings.model_copy(update={"bucket": src, "prefix": ""})),
        src_key,
        dst_key,
        None,
    )


def test_copies_bytes_type_and_metadata_of_awkward_keys(s3: S3Info) -> None:
    src, dst = buckets(s3)
    client = s3.client()
    for key in KEYS:
        client.put_object(
            Bucket=src, Key=key, Body=key.encode() * 3, ContentType="text/x-a", Metadata={"k": "v"}
        )
    location = S3Location(s3.storage(dst, "copy"))
    for key in KEYS:
        location.copy_from(S3Location(s3.storage(src)), key, key, None)
        got = client.get_object(Bucket=dst, Key=f"copy/{key}")
        assert got["Body"].read() == key.encode() * 3
        assert got["ContentType"] == "text/x-a"
        assert got["Metadata"] == {"k": "v"}


def test_new_metadata_replaces_the_sources(s3: S3Info) -> None:
    src, dst = buckets(s3)
    s3.client().put_object(Bucket=src, Key="a", Body=b"a", Metadata={"old": "1"})
    new = ObjectMeta({"ContentType": "text/x-b"}, {"new": "2"})
    S3Location(s3.storage(dst)).copy_from(S3Location(s3.storage(src)), "a", "b", new)
    got = s3.client().head_object(Bucket=dst, Key="b")
    assert (got["ContentType"], got["Metadata"]) == ("text/x-b", {"new": "2"})


def test_refusals_are_one_line_errors_and_copy_nothing(s3: S3Info) -> None:
    src, dst = buckets(s3)
    s3.client().put_object(Bucket=src, Key="a", Body=b"a")
    with pytest.raises(SlipwayError, match="NoSuchKey"):
        copy(s3.storage(dst), src, "missing", dst, "b")
    wrong = s3.storage(dst).model_copy(update={"secret_access_key": SecretStr("wrong-secret")})
    with pytest.raises(SlipwayError, match="refused the credentials") as refused:
        copy(wrong, src, "a", dst, "b")
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
        copy(anonymous, "any", "a", "any", "b")


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
        copy(s3.storage(dst).model_copy(update={"endpoint_url": proxy}), src, "a", dst, "b")
    assert len(copies) == 3
    assert s3.client().get_object(Bucket=dst, Key="b")["Body"].read() == b"payload"


def test_a_connection_the_server_closed_is_replaced(s3: S3Info) -> None:
    src, dst = buckets(s3)
    for key in ("a", "b", "c"):
        s3.client().put_object(Bucket=src, Key=key, Body=key.encode())
    forwarded: list[str] = []

    def count(method: str, path: str) -> bool:
        forwarded.append(f"{method} {path.split('?')[0]}")
        return False

    with fault_proxy(s3.endpoint_url, count, hang_up=True) as proxy:
        settings = s3.storage(dst).model_copy(update={"endpoint_url": proxy})
        for key in ("a", "b", "c"):  # one thread: each copy finds its connection closed
            copy(settings, src, key, dst, key)
    assert [f for f in forwarded if f.startswith("PUT")] == [f"PUT /{dst}/{k}" for k in "abc"]
    for key in ("a", "b", "c"):
        assert s3.client().get_object(Bucket=dst, Key=key)["Body"].read() == key.encode()


def test_a_lasting_error_gives_up_after_five_retries(s3: S3Info) -> None:
    src, dst = buckets(s3)
    s3.client().put_object(Bucket=src, Key="a", Body=b"payload")
    copies: list[str] = []

    def always(method: str, path: str) -> bool:
        if method == "PUT":
            copies.append(path)
        return method == "PUT"

    error = (200, "InternalError", "still failing")
    with fault_proxy(s3.endpoint_url, always, error) as proxy:
        settings = s3.storage(dst).model_copy(update={"endpoint_url": proxy})
        with pytest.raises(SlipwayError, match="InternalError still failing") as failed:
            copy(settings, src, "a", dst, "b")
    assert "\n" not in str(failed.value)
    assert len(copies) == 6  # botocore: the first attempt, then max_attempts=5 retries
    assert s3.client().list_objects_v2(Bucket=dst).get("KeyCount") == 0


def test_an_unreachable_endpoint_is_one_line(s3: S3Info) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    nowhere = s3.storage("any").model_copy(update={"endpoint_url": f"http://127.0.0.1:{port}"})
    with pytest.raises(SlipwayError, match="cannot reach the S3 endpoint"):
        copy(nowhere, "any", "a", "any", "b")
