"""Helpers for tests of and with the ECS simulator: boto3 calls shortened, polling."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from mypy_boto3_ecs import ECSClient
    from mypy_boto3_ecs.type_defs import WaiterConfigTypeDef


def waiter_config(attempts: int = 150) -> WaiterConfigTypeDef:
    """The waiters' real delays (6 to 15 s), scaled down: botocore sleeps a float fine,
    though the stubs type `Delay` as int."""
    return cast("WaiterConfigTypeDef", {"Delay": 0.2, "MaxAttempts": attempts})


FAST = waiter_config()  # for every botocore ECS waiter


def containers(name: str, image_name: str = "app:v1", **extra: Any) -> dict[str, Any]:
    """RegisterTaskDefinition fields with one essential container."""
    return {
        "containerDefinitions": [{"name": name, "image": image_name, "essential": True, **extra}]
    }


def wait_for(what: str, check: Callable[[], bool], timeout: float = 90) -> None:
    """Poll `check` until true; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def service(client: ECSClient, name: str, cluster: str = "prod") -> Any:
    """The service as DescribeServices answers it."""
    return client.describe_services(cluster=cluster, services=[name])["services"][0]


def deployment(client: ECSClient, name: str, ident: str) -> dict[str, Any] | None:
    """The service's deployment `ident`, None once it is gone."""
    found = service(client, name)["deployments"]
    return next((d for d in found if d["id"] == ident), None)


def messages(client: ECSClient, name: str) -> list[str]:
    """The service's event messages, newest first."""
    return [e["message"] for e in service(client, name)["events"]]


def primary_completed(client: ECSClient, name: str) -> Callable[[], bool]:
    """A check for `wait_for`: the service's PRIMARY deployment is COMPLETED."""
    return lambda: bool(service(client, name)["deployments"][0]["rolloutState"] == "COMPLETED")
