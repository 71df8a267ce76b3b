"""Same-endpoint mirror copies through awscrt's S3 client, on the real S3 server.

Copies land byte-equal with the source's metadata, awkward keys and prefixes included;
an error answer (500 after the CRT's retries, 403, a 200 carrying an <Error>) fails
exactly the objects it hit, and none of them counts as copied.
"""

from __future__ import annotations

from contextlib import closing

import pytest
from pydantic import SecretStr

from blocks.settings import StorageSettings
from tasks.storage.crt_copy import CrtCopies, direct
from tasks.storage.locations import S3Location
from tasks.storage.mirror import mirror, plan_mirror, run_copies
from tests.harness.s3 import S3Info
from tests.s3_fault_proxy import fault_proxy
from tests.test_files_backup import AWKWARD_KEYS, fill_awkward, new_bucket, put, s3_contents

pytestmark = [pytest.mark.s3]


def test_mirror_copies_land_equal_with_metadata(s3: S3Info) -> None:
    src_bucket, dst_bucket = new_bucket(s3, "crt-src"), new_bucket(s3, "crt-dst")
    content = fill_awkward(s3, src_bucket, "in/")
    result = mirror(S3Location(s3.storage(src_bucket, "in")), S3Location(s3.storage(dst_bucket)))
    assert not result.failures
    assert result.copied == len(content)
    assert s3_contents(s3, dst_bucket) == content
    client = s3.client()
    for key in [*AWKWARD_KEYS, "meta/with-metadata.css"]:
        src = client.head_object(Bucket=src_bucket, Key="in/" + key)
        dst = client.head_object(Bucket=dst_bucket, Key=key)
        assert dst["ETag"] == src["ETag"], key
        assert dst["Metadata"] == src["Metadata"], key
        assert dst["ContentType"] == src["ContentType"], key
    again = mirror(S3Location(s3.storage(src_bucket, "in")), S3Location(s3.storage(dst_bucket)))
    assert (again.copied, again.plan.unchanged) == (0, len(content))


def test_a_changed_source_fails_the_etag_check(s3: S3Info) -> None:
    bucket = new_bucket(s3, "crt-etag")
    src, dst = S3Location(s3.storage(bucket, "src")), S3Location(s3.storage(bucket, "dst"))
    put(s3.client(), bucket, "src/a.txt", b"new bytes")
    with closing(CrtCopies(src, dst)) as crt:
        future = crt.copy("a.txt", 9, "0" * 32)  # listed before the source changed
        with pytest.raises(Exception, match=r"'a.txt' changed .* run the mirror again"):
            future.result()


@pytest.mark.parametrize(
    ("error", "said"),
    [
        # Retried by the CRT, then reported without the answer.
        ((500, "InternalError", "injected"), "AWS_ERROR_S3_INTERNAL_ERROR"),
        ((403, "AccessDenied", "Access Denied"), "HTTP 403 AccessDenied: Access Denied"),
        # CopyObject's 200 carrying an error: retried as a 500, then failed.
        ((200, "InternalError", "Please try again."), "AWS_ERROR_S3_INTERNAL_ERROR"),
    ],
    ids=["500", "403", "200-with-error"],
)
def test_an_error_answer_fails_exactly_its_objects(
    s3: S3Info, error: tuple[int, str, str], said: str
) -> None:
    src_bucket, dst_bucket = new_bucket(s3, "crt-f-src"), new_bucket(s3, "crt-f-dst")
    keys = [f"obj/{i:02}.bin" for i in range(12)]
    client = s3.client()
    for i, key in enumerate(keys):
        put(client, src_bucket, key, bytes([i]) * (100 + i))
    doomed = {"obj/03.bin", "obj/07.bin"}

    def fail(method: str, path: str) -> bool:
        return method == "PUT" and any(f"/{dst_bucket}/{k}" in path for k in doomed)

    with fault_proxy(s3.endpoint_url, fail, error) as proxy:
        on = s3.storage(src_bucket).model_copy(update={"endpoint_url": proxy})
        src, dst = S3Location(on), S3Location(on.at(f"s3://{dst_bucket}"))
        plan, _ = plan_mirror(src, dst, delete=False)
        copied, copied_bytes, failures = run_copies(src, dst, plan.copy)
    assert copied == len(keys) - len(doomed)
    assert copied_bytes == sum(100 + i for i, k in enumerate(keys) if k not in doomed)
    assert sorted(f.split(":")[0] for f in failures) == sorted(doomed)
    assert all(said in f for f in failures), failures
    landed = s3_contents(s3, dst_bucket)
    assert set(landed) == set(keys) - doomed
    assert all(landed[k] == bytes([i]) * (100 + i) for i, k in enumerate(keys) if k in landed)


def test_requests_go_where_boto3_sends_them(s3: S3Info) -> None:
    on_aws = StorageSettings(
        bucket="my-bucket",
        prefix="p",
        region="eu-west-1",
        access_key_id="AKIDEXAMPLE",
        secret_access_key=SecretStr("not-a-secret"),
    )
    aws = S3Location(on_aws)
    assert (CrtCopies(aws, aws).host, CrtCopies(aws, aws).path) == (
        "my-bucket.s3.eu-west-1.amazonaws.com",
        "/",
    )
    dotted = S3Location(on_aws.model_copy(update={"bucket": "my.bucket"}))
    assert (CrtCopies(dotted, dotted).host, CrtCopies(dotted, dotted).path) == (
        "s3.eu-west-1.amazonaws.com",
        "/my.bucket/",
    )
    local = S3Location(s3.storage("b"))
    assert CrtCopies(local, local).path == "/b/"


def test_a_store_behind_a_proxy_stays_with_boto3(
    s3: S3Info, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = S3Location(s3.storage("b"))
    assert direct(local)
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    assert not direct(local)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert direct(local)
