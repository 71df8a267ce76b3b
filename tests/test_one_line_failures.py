"""The one place that words a library's exception (`blocks.failures`), and the runner that
ends every failure of the command line in one line (`deployments.cli_errors`): no services."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest


def _library_errors() -> list[tuple[BaseException, str]]:
    import botocore.exceptions
    import docker.errors
    import httpx
    import paramiko

    prefect_api = "http://127.0.0.1:4200/api"
    no_bucket: Any = {"Error": {"Code": "NoSuchBucket", "BucketName": "gone"}}
    return [
        (
            botocore.exceptions.EndpointConnectionError(endpoint_url="http://s3.test:9000/b?x=1"),
            "cannot reach the S3 endpoint at http://s3.test:9000",
        ),
        (
            botocore.exceptions.ClientError(no_bucket, "ListObjectsV2"),
            "bucket 'gone' does not exist",
        ),
        (
            botocore.exceptions.ClientError({"Error": {"Code": "AccessDenied"}}, "PutObject"),
            "refused the credentials",
        ),
        (botocore.exceptions.NoCredentialsError(), "no S3 credentials"),
        (
            psycopg.OperationalError('connection failed\nFATAL: database "x" does not exist'),
            'database "x" does not exist',
        ),
        (docker.errors.DockerException("engine gone\nmore"), "Docker engine"),
        (paramiko.AuthenticationException("no way"), "SSH refused the login"),
        (
            httpx.ConnectError("refused", request=httpx.Request("GET", f"{prefect_api}/flows")),
            "cannot reach the Prefect API",
        ),
        (
            httpx.ConnectError("refused", request=httpx.Request("GET", "http://hook.test/x")),
            "cannot reach http://hook.test",
        ),
        (OSError(28, "No space left on device", "/var/tmp/x"), "No space left on device"),
        (RuntimeError("kaput\nsecond line"), "unexpected RuntimeError: kaput second line"),
    ]


def test_each_library_error_is_one_line_naming_what_and_where(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from blocks.failures import explain

    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")

    for exc, words in _library_errors():
        line = explain(exc)
        assert "\n" not in line, line
        assert words.lower() in line.lower(), line
        assert ": " in line, line  # what (at where): fix


def _app(failure: BaseException) -> Any:
    import typer

    app = typer.Typer()

    @app.command()
    def fails(verbose: bool = typer.Option(False, "--verbose", "-v")) -> None:
        raise failure

    @app.command()
    def works() -> None:
        typer.echo("done")

    return app


@pytest.mark.parametrize(
    ("args", "failure", "status", "words"),
    [
        (["fails"], RuntimeError("kaput"), 1, "unexpected RuntimeError: kaput"),
        (["fails"], KeyboardInterrupt(), 130, "interrupted"),
        (["fails", "--nope"], RuntimeError(), 2, "no such option: --nope at `slipway fails`"),
        (["nothing"], RuntimeError(), 2, "no such command 'nothing' at `slipway`"),
        (["works"], RuntimeError(), 0, ""),
    ],
)
def test_the_runner_ends_every_failure_in_one_line(
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    failure: BaseException,
    status: int,
    words: str,
) -> None:
    from deployments.cli_errors import run_app

    with pytest.raises(SystemExit) as exited:
        run_app(_app(failure), args)
    assert exited.value.code == status
    err = capsys.readouterr().err
    if not words:
        assert err == ""
        return
    assert err.count("\n") == 1, err
    assert err.startswith("error: "), err
    assert words in err, err


def test_verbose_shows_the_traceback_then_the_line(capsys: pytest.CaptureFixture[str]) -> None:
    from deployments.cli_errors import run_app

    with pytest.raises(SystemExit):
        run_app(_app(RuntimeError("kaput")), ["fails", "-v"])
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert err.strip().splitlines()[-1].startswith("error: unexpected RuntimeError: kaput")
