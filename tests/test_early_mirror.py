"""The mirror begun before Prefect loads: adopted only by the same mirror, stoppable, and
never deleting after an incomplete run. Real S3 servers, no Prefect (the CLI tests cover it)."""

from __future__ import annotations

import os
import threading
import time

import pytest

from blocks.errors import SlipwayError
from tasks import early_mirror
from tasks.bucket_mirror import copy_changes, delete_gone
from tasks.object_locations import S3Location
from tests.harness.s3 import S3Info
from tests.test_files_backup import new_bucket, put, s3_contents

pytestmark = [pytest.mark.s3, pytest.mark.s3b]


@pytest.fixture
def stores(s3: S3Info, s3b: S3Info, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """A source bucket of 40 objects on `s3` (SLIPWAY_SOURCE_*), an empty one on `s3b` (AWS_)."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "SLIPWAY_")):
            monkeypatch.delenv(name)
    for name, value in {**s3.env("SLIPWAY_SOURCE_"), **s3b.env()}.items():
        monkeypatch.setenv(name, value)
    src, dst = new_bucket(s3, "src"), new_bucket(s3b, "dst")
    for i in range(40):
        put(s3.client(), src, f"files/{i}.txt", os.urandom(100 + i))
    return src, dst


def test_the_same_mirror_adopts_the_early_one_and_gets_all_of_it(
    s3: S3Info, s3b: S3Info, stores: tuple[str, str]
) -> None:
    src, dst = stores
    began = time.monotonic()
    early_mirror.start(f"s3://{src}", f"s3://{dst}/m", delete=False, head_start=60)
    assert time.monotonic() - began < 30  # it waited for the plan, not for the head start
    early = early_mirror.adopt(f"s3://{src}", f"s3://{dst}/m", delete=False)
    assert early is not None
    assert early.copying.is_set()
    progress: list[tuple[int, int]] = []
    destination, result = early.finish(lambda done, total: progress.append((done, total)))
    assert destination.describe().startswith(f"s3://{dst}/m/")
    assert result.copied == 40
    assert s3_contents(s3b, dst, "m/") == s3_contents(s3, src)
    assert progress[-1][0] == progress[-1][1] == result.copied_bytes
    assert early_mirror.adopt(f"s3://{src}", f"s3://{dst}/m", delete=False) is None  # taken


@pytest.mark.parametrize(
    "other",
    ["another destination", "--delete", "other credentials"],
)
def test_another_mirror_does_not_adopt_it(
    other: str, stores: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    src, dst = stores
    early_mirror.start(f"s3://{src}", f"s3://{dst}/m", delete=False)
    destination, delete = f"s3://{dst}/m", False
    if other == "another destination":
        destination = f"s3://{dst}/elsewhere"
    elif other == "--delete":
        delete = True
    else:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "someone-else")
    assert early_mirror.adopt(f"s3://{src}", destination, delete) is None
    assert early_mirror.adopt(f"s3://{src}", f"s3://{dst}/m", delete=False) is None  # let go


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("s3://no-such-bucket-here", "does not exist"),
        ("ftp://host/files", "neither s3://bucket/prefix nor a local directory"),
    ],
)
def test_a_failing_early_mirror_fails_its_adopter_in_one_line(
    source: str, expected: str, s3b: S3Info, stores: tuple[str, str]
) -> None:
    _, dst = stores
    began = time.monotonic()
    early_mirror.start(source, f"s3://{dst}/m", delete=False, head_start=60)
    assert time.monotonic() - began < 30  # a failure ends the wait too
    early = early_mirror.adopt(source, f"s3://{dst}/m", delete=False)
    assert early is not None
    with pytest.raises(SlipwayError, match=expected):
        early.finish(lambda done, total: None)
    assert s3_contents(s3b, dst) == {}


def test_a_discarded_early_mirror_stops_and_deletes_nothing(
    s3: S3Info, s3b: S3Info, stores: tuple[str, str]
) -> None:
    src, dst = stores
    put(s3b.client(), dst, "m/only-here.txt", b"stays")
    early_mirror.start(f"s3://{src}", f"s3://{dst}/m", delete=True)
    early_mirror.discard()  # as the CLI does when the flow run fails before adopting it
    copied = s3_contents(s3b, dst, "m/")
    assert copied.pop("only-here.txt") == b"stays"
    source = s3_contents(s3, src)
    assert len(copied) < len(source)  # stopped before it was done
    assert all(source[key] == body for key, body in copied.items())


def test_deletions_wait_for_every_copy(s3: S3Info, s3b: S3Info, stores: tuple[str, str]) -> None:
    src, dst = stores
    put(s3b.client(), dst, "m/only-here.txt", b"stays")
    source, destination = S3Location(s3.storage(src)), S3Location(s3b.storage(dst, "m"))
    stop = threading.Event()
    stop.set()
    result = copy_changes(source, destination, delete=True, stop=stop)
    assert result.copied == 0
    assert [a.key for a in result.plan.delete] == ["only-here.txt"]
    with pytest.raises(SlipwayError, match="stopped before its last copy; nothing was deleted"):
        delete_gone(destination, result)
    assert s3_contents(s3b, dst, "m/") == {"only-here.txt": b"stays"}
