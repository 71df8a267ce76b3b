"""The durable release journal: `releases/<env>/<release id>.json` in the backup store.

Saved after every step, so a release whose process died can still be rolled back from what
it recorded: the version live before, the pre-release backup, whether migrations ran and
the app was stopped. Its rollback metrics follow the runbook's `rollback-metrics.json`.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from blocks.errors import SlipwayError
from blocks.settings import StorageSettings
from blocks.text import error_line
from tasks.postgres.catalog import new_backup_id, read_json, utcnow, write_json
from tasks.storage.s3 import s3_errors

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

StepStatus = Literal["running", "succeeded", "failed", "skipped"]
ReleaseStatus = Literal["running", "succeeded", "failed", "rolled_back", "rollback_failed"]
# A release in one of these states may have left the environment between versions.
NEEDS_ROLLBACK: frozenset[str] = frozenset({"running", "failed", "rollback_failed"})


class StepRecord(BaseModel):
    name: str
    status: StepStatus
    started_at: datetime
    finished_at: datetime | None = None
    seconds: float | None = None
    detail: str | None = None
    output: dict[str, str] | None = None  # the tails of the commands it ran, by command


class SystemMetrics(BaseModel):
    """The operations machine and engine at the end of a rollback (the Recyclic rollback guide)."""

    load_average_1m: float | None = None
    cpu_count: int | None = None
    memory_usage_percent: float | None = None
    disk_usage_percent: float | None = None
    docker_containers_running: int | None = None
    docker_images_count: int | None = None


class RollbackMetrics(BaseModel):
    timestamp: datetime
    event: Literal["rollback_success", "rollback_failure"]
    version: str | None
    duration_seconds: float
    status: Literal["success", "failure"]
    hostname: str
    user: str
    system_metrics: SystemMetrics


class RollbackRecord(BaseModel):
    started_at: datetime
    finished_at: datetime | None = None
    status: Literal["running", "succeeded", "failed"] = "running"
    to_version: str | None = None
    database_restored: bool = False
    steps: list[StepRecord] = Field(default_factory=list)
    error: str | None = None
    metrics: RollbackMetrics | None = None


class ReleaseRecord(BaseModel):
    """Everything one release did, step by step."""

    format: int = 1
    id: str
    environment: str
    version: str
    previous_version: str | None = None
    status: ReleaseStatus = "running"
    started_at: datetime
    finished_at: datetime | None = None
    hostname: str = Field(default_factory=socket.gethostname)
    user: str = Field(default_factory=getpass.getuser)
    flow_run_id: str | None = None
    backup_id: str | None = None
    migrations_applied: list[str] = Field(default_factory=list)
    app_stopped: bool = False
    steps: list[StepRecord] = Field(default_factory=list)
    skipped_checks: list[str] = Field(default_factory=list)
    flags: dict[str, str] = Field(default_factory=dict)
    # What the target saved for the rollback besides the version (Kubernetes: the flags'
    # data before, the names of in-cluster Secret copies; never a secret's value).
    target_state: dict[str, Any] | None = None
    error: str | None = None
    rollback: RollbackRecord | None = None

    def step_status(self, name: str) -> StepStatus | None:
        found = [s for s in self.steps if s.name == name]
        return found[-1].status if found else None

    def changed(self, name: str) -> bool:
        """Whether step `name` may have changed something (it started, whatever its end)."""
        return self.step_status(name) in ("running", "succeeded", "failed")


def release_root(store: StorageSettings, environment: str) -> str:
    return store.key("releases", environment)


class Journal:
    """A release record kept in the store, saved at every change."""

    def __init__(self, client: S3Client, store: StorageSettings, record: ReleaseRecord) -> None:
        self.client = client
        self.store = store
        self.record = record

    @classmethod
    def start(
        cls, client: S3Client, store: StorageSettings, environment: str, version: str
    ) -> Journal:
        now = utcnow()
        record = ReleaseRecord(
            id=new_backup_id(now), environment=environment, version=version, started_at=now
        )
        journal = cls(client, store, record)
        journal.save()
        return journal

    @property
    def key(self) -> str:
        return f"{release_root(self.store, self.record.environment)}/{self.record.id}.json"

    def save(self) -> None:
        write_json(self.client, self.store, self.key, self.record)

    def reload(self) -> Journal:
        """The record as the store has it now (another run may have written it since)."""
        raw = read_json(self.client, self.store.bucket, self.key)
        if raw is not None:
            self.record = ReleaseRecord.model_validate(raw)
        return self

    @contextmanager
    def step(self, name: str, steps: list[StepRecord] | None = None) -> Iterator[StepRecord]:
        """Record a step: running (saved before it starts), then succeeded or failed."""
        into = self.record.steps if steps is None else steps
        record = StepRecord(name=name, status="running", started_at=utcnow())
        into.append(record)
        self.save()
        try:
            yield record
        except BaseException as exc:
            record.status = "failed"
            record.detail = record.detail or error_line(exc, 300)
            record.output = record.output or getattr(exc, "output", None) or None
            raise
        else:
            if record.status == "running":
                record.status = "succeeded"
        finally:
            record.finished_at = utcnow()
            record.seconds = round((record.finished_at - record.started_at).total_seconds(), 3)
            self.save()

    def skip(self, name: str, why: str, steps: list[StepRecord] | None = None) -> None:
        now = utcnow()
        (self.record.steps if steps is None else steps).append(
            StepRecord(name=name, status="skipped", started_at=now, finished_at=now, detail=why)
        )
        self.save()

    def finish(self, status: ReleaseStatus, error: str | None = None) -> None:
        self.record.status = status
        self.record.finished_at = utcnow()
        if error:
            self.record.error = error
        self.save()


def list_releases(client: S3Client, store: StorageSettings, environment: str) -> list[Journal]:
    """The environment's releases, newest first."""
    root = release_root(store, environment) + "/"
    keys: list[str] = []
    journals = []
    with s3_errors(store):
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket, Prefix=root)
        for page in pages:
            keys += [o["Key"] for o in page.get("Contents", []) if o["Key"].endswith(".json")]
        for key in sorted(keys, reverse=True):
            raw = read_json(client, store.bucket, key)
            if raw is not None:
                journals.append(Journal(client, store, ReleaseRecord.model_validate(raw)))
    return journals


def find_release(
    client: S3Client, store: StorageSettings, environment: str, release_id: str
) -> Journal:
    key = f"{release_root(store, environment)}/{release_id}.json"
    with s3_errors(store):
        raw = read_json(client, store.bucket, key)
    if raw is None:
        raise SlipwayError(
            f"no release {release_id!r} in {environment!r}: see `slipway status --env {environment}`"
        )
    return Journal(client, store, ReleaseRecord.model_validate(raw))


def system_metrics(target_usage: Mapping[str, int] | None = None) -> SystemMetrics:
    """What the runbook recorded after a rollback; each figure is best effort.

    `target_usage`: the rollout target's own figures (`RolloutTarget.usage`)."""
    metrics = SystemMetrics(cpu_count=os.cpu_count())
    with suppress(OSError):
        metrics.load_average_1m = round(os.getloadavg()[0], 2)
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
        info = dict(line.split(":", 1) for line in lines if ":" in line)
        total = int(info["MemTotal"].split()[0])
        available = int(info["MemAvailable"].split()[0])
        metrics.memory_usage_percent = round(100 * (total - available) / total, 1)
    except (OSError, KeyError, ValueError):
        pass
    disk = shutil.disk_usage("/")
    metrics.disk_usage_percent = round(100 * disk.used / disk.total, 1)
    known = set(SystemMetrics.model_fields)
    return metrics.model_copy(update={k: v for k, v in (target_usage or {}).items() if k in known})
