"""The simulator's object store: what etcd plus the generic registry do for the API server.

Objects are JSON maps keyed by (resource, namespace, name). Every write bumps one global
`resourceVersion` counter and is recorded as a watch event (ADDED/MODIFIED/DELETED); a write
that changes nothing is not a write (no new resourceVersion, no event), as on the real
server. `metadata.generation` starts at 1 and is bumped by spec changes (and, for
Deployments, annotation changes, as the Deployment strategy does); status subresource
writes change only the status (Deployments: and annotations). A PUT or patch whose
`metadata.resourceVersion` is stale gets 409 Conflict. Deleting an object deletes the
objects it owns (ownerReferences) unless `propagationPolicy=Orphan`; deleting a namespace
deletes its objects.
"""

from __future__ import annotations

import copy
import secrets
import threading
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tests.k8s_sim.defaults import apply_defaults, drop_nulls, label_job, validate
from tests.k8s_sim.patch import apply_patch
from tests.k8s_sim.resources import RESOURCES, Resource, resource
from tests.k8s_sim.store_errors import (
    ApiError,
    already_exists,
    bad_request,
    conflict,
    gone,
    not_found,
)

Key = tuple[str, str, str]  # plural, namespace ("" when cluster-scoped), name
NAMESPACES = resource("Namespace")


def now() -> str:
    """A timestamp as the API writes them (RFC 3339, seconds, UTC)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Event:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    res: Resource
    obj: dict[str, Any]
    old: dict[str, Any] | None


def _rv(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def _without_rv(obj: dict[str, Any]) -> dict[str, Any]:
    copied = dict(obj)
    copied["metadata"] = {k: v for k, v in obj["metadata"].items() if k != "resourceVersion"}
    return copied


class Store:
    def __init__(self, history: int = 50_000) -> None:
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self._objects: dict[Key, dict[str, Any]] = {}
        self._rv = 1000
        self._events: deque[Event] = deque(maxlen=history)
        for name in ("default", "kube-system", "kube-public"):
            self.create(NAMESPACES, "", {"metadata": {"name": name}})

    @property
    def resource_version(self) -> int:
        with self.lock:
            return self._rv

    # reads
    def get(self, res: Resource, namespace: str, name: str) -> dict[str, Any]:
        with self.lock:
            obj = self._objects.get(self._key(res, namespace, name))
            if obj is None:
                raise not_found(res, name)
            return copy.deepcopy(obj)

    def find(self, res: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.get(res, namespace, name)
        except ApiError:
            return None

    def list_objects(
        self,
        res: Resource,
        namespace: str | None,
        matches: Callable[[dict[str, Any]], bool] = lambda obj: True,
    ) -> tuple[list[dict[str, Any]], int]:
        """Matching objects (all namespaces when `namespace` is None), by name, and the
        list's resourceVersion."""
        with self.lock:
            found = [
                copy.deepcopy(obj)
                for (plural, ns, _), obj in sorted(self._objects.items())
                if plural == res.plural and (namespace is None or ns == namespace) and matches(obj)
            ]
            return found, self._rv

    def events_after(self, rv: int, timeout: float) -> list[Event]:
        """Events newer than `rv`, waiting up to `timeout` for one; 410 if `rv` is older than
        the history kept."""
        with self.lock:
            if self._events and rv < self._events[0].rv - 1:
                raise gone(f"too old resource version: {rv} ({self._events[0].rv - 1})")
            if self._rv <= rv:
                self.changed.wait(timeout)
            return [e for e in self._events if e.rv > rv]

    # writes
    def create(
        self, res: Resource, namespace: str, body: dict[str, Any], *, dry_run: bool = False
    ) -> dict[str, Any]:
        obj = drop_nulls(body)
        obj["apiVersion"], obj["kind"] = res.api_version, res.kind
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        if res.namespaced:
            if meta.get("namespace") not in (None, "", namespace):
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent "
                    "on the request"
                )
            meta["namespace"] = namespace
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = str(meta["generateName"]) + secrets.token_hex(3)[:5]
        if meta.get("resourceVersion"):
            raise ApiError(
                500, "InternalError", "resourceVersion should not be set on objects to be created"
            )
        with self.lock:
            if res.namespaced and (NAMESPACES.plural, "", namespace) not in self._objects:
                raise not_found(NAMESPACES, namespace)
            name = str(meta.get("name") or "")
            if name and self._key(res, namespace, name) in self._objects:
                raise already_exists(res, name)
            if res.subresources and "status" in res.subresources:
                obj["status"] = {}
            if res.kind == "Pod":
                obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
            if res.kind == "PersistentVolumeClaim":
                obj["status"] = {"phase": "Pending"}  # no provisioner binds it
            apply_defaults(res, obj)
            validate(res, obj, None)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now()
            if res.has_generation:
                meta["generation"] = 1
            if res.kind == "Job":
                label_job(obj)
            if dry_run:
                return dict(obj)
            return self._write(res, namespace, obj, None)

    def update(
        self,
        res: Resource,
        namespace: str,
        name: str,
        body: dict[str, Any],
        *,
        subresource: str = "",
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """PUT: replace the object (or its status), checking a given resourceVersion."""
        with self.lock:
            old = self.get(res, namespace, name)
            given = _rv(body)
            if given and given != _rv(old):
                raise conflict(res, name)
            meta = body.get("metadata") or {}
            if meta.get("name") not in (None, name):
                raise bad_request("the name of the object does not match the name on the URL")
            if res.namespaced and meta.get("namespace") not in (None, "", namespace):
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent "
                    "on the request"
                )
            obj = self._prepare_update(res, old, drop_nulls(body), subresource)
            validate(res, obj, old)
            if _without_rv(obj) == _without_rv(old) or dry_run:
                return obj if dry_run else old
            return self._write(res, namespace, obj, old)

    def patch(
        self,
        res: Resource,
        namespace: str,
        name: str,
        content_type: str,
        body: bytes,
        *,
        subresource: str = "",
        dry_run: bool = False,
    ) -> dict[str, Any]:
        with self.lock:
            old = self.get(res, namespace, name)
            patched = apply_patch(content_type, old, body)
            if not _rv(patched):  # a patch may drop it (a merge patch with null)
                patched.setdefault("metadata", {})["resourceVersion"] = _rv(old)
            return self.update(
                res, namespace, name, patched, subresource=subresource, dry_run=dry_run
            )

    def mutate(
        self,
        res: Resource,
        namespace: str,
        name: str,
        change: Callable[[dict[str, Any]], None],
        *,
        subresource: str = "",
    ) -> dict[str, Any] | None:
        """Read, change in place, write (for the controllers); None if the object is gone."""
        with self.lock:
            obj = self.find(res, namespace, name)
            if obj is None:
                return None
            change(obj)
            return self.update(res, namespace, name, obj, subresource=subresource)

    def delete(
        self,
        res: Resource,
        namespace: str,
        name: str,
        *,
        propagation: str = "Background",
        dry_run: bool = False,
    ) -> dict[str, Any]:
        with self.lock:
            obj = self.get(res, namespace, name)
            if dry_run:
                return obj
            self._delete(res, namespace, obj, propagation)
            return obj

    # internals
    def _key(self, res: Resource, namespace: str, name: str) -> Key:
        return (res.plural, namespace if res.namespaced else "", name)

    def _prepare_update(
        self, res: Resource, old: dict[str, Any], obj: dict[str, Any], subresource: str
    ) -> dict[str, Any]:
        obj["apiVersion"], obj["kind"] = res.api_version, res.kind
        meta = obj.setdefault("metadata", {})
        for key in ("uid", "creationTimestamp", "name", "namespace", "generation"):
            if key in old["metadata"]:
                meta[key] = old["metadata"][key]
            else:
                meta.pop(key, None)
        meta["resourceVersion"] = _rv(old)
        if subresource == "status":
            new = copy.deepcopy(old)
            new["status"] = obj.get("status") or {}
            if res.kind == "Deployment":
                new["metadata"] = meta
                new["metadata"]["labels"] = copy.deepcopy(old["metadata"].get("labels"))
                if new["metadata"]["labels"] is None:
                    del new["metadata"]["labels"]
            return new
        if "status" in res.subresources or res.kind == "Pod":
            if "status" in old:
                obj["status"] = copy.deepcopy(old["status"])
            else:
                obj.pop("status", None)
        apply_defaults(res, obj)
        if res.has_generation:
            spec_changed = obj.get("spec") != old.get("spec")
            notes_changed = res.kind == "Deployment" and meta.get("annotations") != old[
                "metadata"
            ].get("annotations")
            if spec_changed or notes_changed:
                meta["generation"] = int(old["metadata"].get("generation", 1)) + 1
        return obj

    def _write(
        self, res: Resource, namespace: str, obj: dict[str, Any], old: dict[str, Any] | None
    ) -> dict[str, Any]:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        self._objects[self._key(res, namespace, obj["metadata"]["name"])] = obj
        self._events.append(
            Event(self._rv, "ADDED" if old is None else "MODIFIED", res, copy.deepcopy(obj), old)
        )
        self.changed.notify_all()
        return copy.deepcopy(obj)

    def _delete(self, res: Resource, namespace: str, obj: dict[str, Any], propagation: str) -> None:
        key = self._key(res, namespace, obj["metadata"]["name"])
        if key not in self._objects:
            return
        del self._objects[key]
        self._rv += 1
        gone_obj = copy.deepcopy(obj)
        gone_obj["metadata"]["resourceVersion"] = str(self._rv)
        self._events.append(Event(self._rv, "DELETED", res, gone_obj, None))
        self.changed.notify_all()
        uid = obj["metadata"]["uid"]
        for (plural, ns, _name), other in list(self._objects.items()):
            owner_res = next(r for r in RESOURCES if r.plural == plural)
            if res.kind == "Namespace" and ns == obj["metadata"]["name"] and owner_res.namespaced:
                self._delete(owner_res, ns, other, "Background")
                continue
            refs = other["metadata"].get("ownerReferences") or []
            if not any(ref.get("uid") == uid for ref in refs):
                continue
            if propagation == "Orphan":
                orphan = copy.deepcopy(other)
                orphan["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != uid]
                if not orphan["metadata"]["ownerReferences"]:
                    del orphan["metadata"]["ownerReferences"]
                self._write(owner_res, ns, orphan, other)
            else:
                self._delete(owner_res, ns, other, propagation)
