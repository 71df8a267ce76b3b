"""A tiny flow the Prefect smoke test deploys and runs through the worker."""

from pathlib import Path

from prefect import flow, task


@task
def write_marker(path: str, text: str) -> str:
    Path(path).write_text(text)
    return text


@flow(name="slipway-smoke")
def smoke(path: str, text: str) -> str:
    """Write `text` to `path`, so the test sees the run really happened on the worker."""
    return write_marker(path, text)
