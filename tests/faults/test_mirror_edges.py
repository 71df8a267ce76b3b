"""A bucket mirror off the happy path, on real S3 servers and disks.

14. One server under two spellings, or two keys, is one server: the overlap guard holds.
15. Keys no file can have are skipped and reported; nothing is written outside the
    destination directory, and no bytes are lost silently.
16. Links and special files in a local source are reported each; the rest is mirrored.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from blocks.errors import SlipwayError
from blocks.settings import StorageSettings
from tasks.postgres.catalog import new_backup_id
from tasks.storage.endpoint_identity import same_server
from tasks.storage.locations import LocalLocation, ObjectMeta, S3Location
from tasks.storage.mirror import mirror
from tasks.storage.snapshot import snapshot_to_store
from tasks.storage.snapshot_restore import restore_snapshot
from tests.faults.any_key_proxy import any_key_proxy, stored_key
from tests.harness.s3 import S3Info, SeaweedS3, find_weed
from tests.test_files_backup import dir_contents, new_bucket, put, s3_contents

pytestmark = [pytest.mark.s3]

# Keys AWS accepts that no file below a directory can have (point 15).
HOSTILE = {
    ".": b"a dot",
    "..": b"two dots",
    "a//b": b"empty segment",
    "/abs": b"absolute",
    "x/./y": b"dot segment",
    "up/../../escape": b"climbs out",
    "withdata/": b"bytes in a folder marker",
}
GOOD = {"good/file.txt": b"good", "top.txt": os.urandom(3000)}


def localhost(info: S3Info) -> str:
    """The same endpoint, spelled with the name instead of the address."""
    assert "127.0.0.1" in info.endpoint_url
    return info.endpoint_url.replace("127.0.0.1", "localhost")


# -- 14: the overlap guard --------------------------------------------------------------


def test_one_server_spelled_two_ways_is_refused(s3: S3Info) -> None:
    bucket = new_bucket(s3, "app")
    put(s3.client(), bucket, "a.txt", b"a")
    by_name = s3.storage(bucket).model_copy(update={"endpoint_url": localhost(s3)})
    by_address = s3.storage(bucket, "mirror")
    pairs = [
        (S3Location(by_name), S3Location(by_address)),
        (S3Location(by_address), S3Location(by_name)),
    ]
    for src, dst in pairs * 2:  # run again: each run would nest mirror/mirror/... deeper
        with pytest.raises(SlipwayError, match="overlap"):
            mirror(src, dst)
    assert s3_contents(s3, bucket) == {"a.txt": b"a"}


def test_spellings_of_one_server_are_one_server() -> None:
    def on(endpoint: str | None, region: str = "us-east-1") -> StorageSettings:
        return StorageSettings(bucket="b", endpoint_url=endpoint, region=region)

    same = ["http://localhost:9000", "http://127.0.0.1:9000", "http://[::1]:9000"]
    same.append(f"http://{socket.gethostname()}:9000")  # this machine, by its own name
    for a in same:
        for b in same:
            assert same_server(on(a), on(b)), (a, b)
    assert not same_server(on("http://127.0.0.1:9000"), on("http://127.0.0.1:9001"))
    assert not same_server(on("http://localhost:80"), on("https://localhost"))
    assert same_server(on("http://localhost"), on("http://127.0.0.1:80/"))
    # AWS: bucket names are global, whatever the region or the endpoint's spelling.
    assert same_server(on(None, "eu-west-1"), on("https://s3.us-east-1.amazonaws.com"))


@dataclass(frozen=True)
class TwoKeys:
    first: S3Info
    second: S3Info  # the same server, another identity


@pytest.fixture(scope="module")
def two_keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoKeys]:
    """A SeaweedFS server of its own with a second identity, added as an operator would."""
    server = SeaweedS3(tmp_path_factory.mktemp("two-keys"), name="s3-two-keys")
    try:
        first = server.start()
        assert server.proc is not None
        args = [str(a) for a in server.proc.popen.args]  # type: ignore[union-attr]
        master = next(a.split("=", 1)[1] for a in args if a.startswith("-master.port="))
        access, secret = "second-" + secrets.token_hex(4), secrets.token_urlsafe(24)
        command = (
            f"s3.configure -user=second -access_key={access} -secret_key={secret} "
            "-actions=Read,Write,List,Tagging,Admin -apply\n"
        )
        subprocess.run(
            [find_weed(), "shell", f"-master=127.0.0.1:{master}"],
            input=command,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        second = S3Info(first.endpoint_url, access, secret)
        probe = new_bucket(first, "probe")
        put(second.client(), probe, "written-with-the-second-key", b"x")
        yield TwoKeys(first, second)
    finally:
        server.stop()


def test_other_keys_for_the_same_server_are_refused(two_keys: TwoKeys) -> None:
    first, second = two_keys.first, two_keys.second
    bucket = new_bucket(first, "app")
    put(first.client(), bucket, "a.txt", b"a")
    mine = S3Location(first.storage(bucket))
    theirs_by_name = second.storage(bucket, "mirror").model_copy(
        update={"endpoint_url": localhost(second)}
    )
    for src, dst in [
        (mine, S3Location(second.storage(bucket, "mirror"))),
        (mine, S3Location(theirs_by_name)),
        (S3Location(second.storage(bucket, "m")), S3Location(first.storage(bucket, "m/n"))),
    ]:
        with pytest.raises(SlipwayError, match="overlap"):
            mirror(src, dst)
    assert s3_contents(first, bucket) == {"a.txt": b"a"}
    # Another bucket on the same server, or another prefix beside the source, is fine.
    other = new_bucket(first, "other")
    assert mirror(mine, S3Location(second.storage(other, "mirror"))).copied == 1
    side = mirror(S3Location(first.storage(bucket, "a")), S3Location(second.storage(bucket, "b")))
    assert side.failures == []


# -- 15: keys no file can have -------------------------------------------------------------


def _hostile_bucket(info: S3Info) -> str:
    bucket = new_bucket(info, "hostile")
    client = info.client()
    for key, body in {**HOSTILE, **GOOD, "empty-dir/": b""}.items():
        put(client, bucket, stored_key(key), body)
    return bucket


@pytest.mark.parametrize("exists", [False, True], ids=["new-directory", "existing-directory"])
def test_hostile_keys_are_skipped_and_reported(s3: S3Info, tmp_path: Path, exists: bool) -> None:
    bucket = _hostile_bucket(s3)
    dest = tmp_path / "mirror"
    kept = {"kept.txt": b"kept"} if exists else {}
    if exists:
        dest.mkdir()
        (dest / "kept.txt").write_bytes(b"kept")
    with any_key_proxy(s3) as url:
        src = S3Location(s3.storage(bucket).model_copy(update={"endpoint_url": url}))
        first = mirror(src, LocalLocation(dest))
        assert dest.is_dir()
        assert [p.name for p in tmp_path.iterdir()] == ["mirror"]  # nothing written beside it
        assert not [p for p in tmp_path.rglob(".slipway-tmp-*")]
        assert dir_contents(dest) == {**GOOD, **kept}
        again = mirror(src, LocalLocation(dest), delete=True)

    assert first.failures == []
    assert first.copied == len(GOOD)
    skipped = {a.key: a.reason for a in first.plan.skipped}
    assert set(skipped) == set(HOSTILE)  # each reported, none lost without a word
    assert "holds 24 bytes" in skipped["withdata/"]
    assert {a.key for a in again.plan.skipped} == set(HOSTILE)
    assert again.copied == 0
    assert dir_contents(dest) == GOOD
    assert [p.name for p in tmp_path.iterdir()] == ["mirror"]
    assert again.deleted == (1 if exists else 0)  # kept.txt: not in the source


def test_a_hostile_key_is_refused_by_the_directory_itself(tmp_path: Path) -> None:
    """Whatever the caller, a local directory never writes outside itself."""
    dest = tmp_path / "d"
    dest.mkdir()
    local = LocalLocation(dest)
    for key, body in HOSTILE.items():
        with pytest.raises(SlipwayError, match="cannot be a file"):
            local.write(key, body, ObjectMeta(), len(body))
    assert [p.name for p in tmp_path.iterdir()] == ["d"]
    assert list(dest.iterdir()) == []


# -- 16: links and special files in a local source ---------------------------------------


def test_links_in_a_local_source_are_reported_and_the_rest_mirrored(
    s3: S3Info, tmp_path: Path
) -> None:
    src = tmp_path / "uploads"
    (src / "sub").mkdir(parents=True)
    files = {"a.txt": b"alpha", "sub/b.txt": b"beta", "gone.txt": b"precious"}
    for key, body in files.items():
        (src / key).write_bytes(body)
    bucket = new_bucket(s3, "mirror")
    dst = S3Location(s3.storage(bucket))
    assert mirror(LocalLocation(src), dst).copied == 3

    # The file is replaced by a link that leads nowhere; more that are no files appear.
    (src / "gone.txt").unlink()
    (src / "gone.txt").symlink_to(src / "moved-away.txt")
    (src / "dirlink").symlink_to(src / "sub", target_is_directory=True)
    (tmp_path / "secret.txt").write_bytes(b"not for the mirror")
    (src / "outside.txt").symlink_to(tmp_path / "secret.txt")
    (src / "inside.txt").symlink_to(src / "a.txt")  # a link to a file inside: its content
    os.mkfifo(src / "pipe")
    (src / "loop-a").symlink_to(src / "loop-b")
    (src / "loop-b").symlink_to(src / "loop-a")
    (src / "new.txt").write_bytes(b"new")
    result = mirror(LocalLocation(src), dst, delete=True)

    assert result.failures == []
    skipped = {a.key: a.reason for a in result.plan.skipped}
    assert set(skipped) == {"gone.txt", "dirlink", "outside.txt", "pipe", "loop-a", "loop-b"}
    assert "dangling" in skipped["gone.txt"]
    assert "directory" in skipped["dirlink"]
    assert "leading out" in skipped["outside.txt"]
    # The rest is mirrored; the copy of the file the dangling link replaced is kept.
    assert s3_contents(s3, bucket) == {
        "a.txt": b"alpha",
        "sub/b.txt": b"beta",
        "gone.txt": b"precious",
        "inside.txt": b"alpha",
        "new.txt": b"new",
    }
    assert result.deleted == 0


def test_hostile_keys_of_a_snapshot_restored_into_a_directory(s3: S3Info, tmp_path: Path) -> None:
    bucket = _hostile_bucket(s3)
    store = s3.storage(new_bucket(s3, "store"), "backups")
    with any_key_proxy(s3) as url:
        src = S3Location(s3.storage(bucket).model_copy(update={"endpoint_url": url}))
        manifest = snapshot_to_store(src, store, "hostile", new_backup_id())
    assert {o.key for o in manifest.objects} == {*HOSTILE, *GOOD, "empty-dir/"}
    dest = tmp_path / "restored"
    with pytest.raises(SlipwayError, match=f"{len(HOSTILE)} objects were skipped"):
        restore_snapshot(store, manifest, LocalLocation(dest))
    assert dir_contents(dest) == GOOD
    assert [p.name for p in tmp_path.iterdir()] == ["restored"]
