"""An environment's release journals, read from its store as `slipway status` reads them."""

from __future__ import annotations

from typing import Any


def release_records(env: str) -> list[Any]:
    """The environment's release records, newest first (its `<env>-store` block's)."""
    from blocks.object_storage import ObjectStorage
    from tasks.release.journal import list_releases

    store = ObjectStorage.resolve(f"{env}-store")
    return [j.record for j in list_releases(store.client(), store, env)]


def release_record(env: str, release_id: str | None = None) -> Any:
    """One release's record: `release_id`'s, else the newest."""
    records = release_records(env)
    if release_id:
        return next(r for r in records if r.id == release_id)
    return records[0]
