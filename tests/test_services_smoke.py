"""One real round trip per harness service."""

from __future__ import annotations

import io
import os
import secrets
import subprocess
import time
from pathlib import Path

import httpx
import paramiko
import psycopg
import pytest
from boto3.s3.transfer import TransferConfig

from tests.harness.docker_engine import BASE_IMAGE, HTTP_PORT, DockerInfo
from tests.harness.postgres import PostgresInfo
from tests.harness.prefect_server import PrefectInfo
from tests.harness.s3 import S3Info
from tests.harness.sshd import SshInfo


@pytest.mark.postgres
def test_postgres_query(postgres: PostgresInfo) -> None:
    with psycopg.connect(postgres.url(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE smoke")
    with psycopg.connect(postgres.url("smoke")) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        conn.execute("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 1000) g")
        row = conn.execute("SELECT count(*), max(id), version() FROM t").fetchone()
    assert row is not None
    assert row[:2] == (1000, 1000)
    assert "PostgreSQL 15" in row[2]


@pytest.mark.s3
def test_s3_put_list_get_multipart(s3: S3Info) -> None:
    client = s3.client()
    bucket = f"smoke-{secrets.token_hex(4)}"
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="a/hello.txt", Body=b"hello")
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == ["a/hello.txt"]
    assert client.get_object(Bucket=bucket, Key="a/hello.txt")["Body"].read() == b"hello"

    # 24 MiB in 8 MiB parts: a real multi-part upload, read back byte for byte.
    payload = os.urandom(24 * 1024 * 1024)
    cfg = TransferConfig(multipart_threshold=8 * 1024 * 1024, multipart_chunksize=8 * 1024 * 1024)
    client.upload_fileobj(io.BytesIO(payload), bucket, "big.bin", Config=cfg)
    head = client.head_object(Bucket=bucket, Key="big.bin")
    assert head["ContentLength"] == len(payload)
    assert head["ETag"].strip('"').endswith("-3"), head["ETag"]  # three parts
    out = io.BytesIO()
    client.download_fileobj(bucket, "big.bin", out)
    assert out.getvalue() == payload

    # A second bucket on the same server works too (several buckets at once).
    other = f"{bucket}-b"
    client.create_bucket(Bucket=other)
    client.copy_object(
        Bucket=other, Key="copy.txt", CopySource={"Bucket": bucket, "Key": "a/hello.txt"}
    )
    assert client.get_object(Bucket=other, Key="copy.txt")["Body"].read() == b"hello"


@pytest.mark.docker
def test_container_answers_http(docker_engine: DockerInfo, tmp_path: Path) -> None:
    client = docker_engine.client()
    container = client.containers.run(
        BASE_IMAGE,
        detach=True,
        ports={f"{HTTP_PORT}/tcp": ("127.0.0.1", None)},
        labels={"slipway-test": "smoke"},
    )
    try:
        container.reload()
        host_port = int(container.ports[f"{HTTP_PORT}/tcp"][0]["HostPort"])
        deadline, body = time.monotonic() + 20, ""
        while time.monotonic() < deadline:
            try:
                body = httpx.get(f"http://127.0.0.1:{host_port}/health", timeout=2).text
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert body == "ok\n"
    finally:
        container.remove(force=True)


@pytest.mark.docker
def test_compose_v2_plugin_and_registry(docker_engine: DockerInfo) -> None:
    """`docker compose` is the v2 plugin; an image pushed to the registry pulls back."""
    env = dict(os.environ, DOCKER_HOST=docker_engine.host)
    env["DOCKER_CONFIG"] = str(docker_engine.docker_config)
    shown = subprocess.run(
        ["docker", "compose", "version", "--short"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown.stdout.strip().lstrip("v").startswith("2.")
    client = docker_engine.client()
    remote = f"{docker_engine.registry}/smoke/busybox"
    client.images.get(BASE_IMAGE).tag(remote, tag="s1")
    pushed = list(client.images.push(remote, tag="s1", stream=True, decode=True))
    assert not [line for line in pushed if "error" in line]
    client.images.remove(f"{remote}:s1")
    assert client.images.pull(remote, tag="s1").attrs["RepoDigests"]
    client.images.remove(f"{remote}:s1")


def _ssh_connect(info: SshInfo, *, known_hosts: bool) -> paramiko.SSHClient:
    """Connect with the throwaway key, refusing any host key not in known_hosts."""
    client = paramiko.SSHClient()
    if known_hosts:
        client.load_host_keys(str(info.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        info.host,
        port=info.port,
        username=info.user,
        key_filename=str(info.client_key),
        look_for_keys=False,
        allow_agent=False,
    )
    return client


@pytest.mark.ssh
def test_ssh_remote_command_with_host_key_checked(ssh_server: SshInfo) -> None:
    client = _ssh_connect(ssh_server, known_hosts=True)
    try:
        _, stdout, _ = client.exec_command("echo slipway-$((6*7)); id -un")
        lines = stdout.read().decode().split()
        assert stdout.channel.recv_exit_status() == 0
    finally:
        client.close()
    assert lines == ["slipway-42", ssh_server.user]


@pytest.mark.ssh
def test_ssh_rejects_unknown_host_key(ssh_server: SshInfo, tmp_path: Path) -> None:
    """The host-key check is real: an empty known_hosts refuses the connection."""
    with pytest.raises(paramiko.SSHException):
        _ssh_connect(ssh_server, known_hosts=False).close()


@pytest.mark.prefect
def test_deployment_runs_on_worker(prefect_server: PrefectInfo, tmp_path: Path) -> None:
    from prefect import flow
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment

    repo = Path(__file__).resolve().parent.parent
    marker, text = tmp_path / "marker.txt", f"ran-{secrets.token_hex(4)}"
    source = flow.from_source(source=str(repo), entrypoint="tests/smoke_flows.py:smoke")
    deployment_id = source.deploy(  # type: ignore[union-attr]
        name="smoke",
        work_pool_name=prefect_server.work_pool,
        build=False,
        push=False,
        print_next_steps=False,
    )
    assert deployment_id
    run = run_deployment(
        "slipway-smoke/smoke", parameters={"path": str(marker), "text": text}, timeout=180
    )
    assert isinstance(run, FlowRun)
    assert run.state is not None
    assert run.state.is_completed(), run.state
    assert marker.read_text() == text
