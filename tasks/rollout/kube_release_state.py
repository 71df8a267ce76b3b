"""What the 224Solutions Kubernetes checklist restores besides the Deployments: feature flags,
Secrets, and the release's temporary objects.

- **Flags**: a ConfigMap named in the environment. A release may set keys in it; its data
  before is returned (it is not secret: it goes into the release journal) and put back by
  the rollback. The Deployments that read it (envFrom, env valueFrom, or a volume) are
  restarted, as `kubectl rollout restart` does, so they see the change.
- **Secrets**: before a release, each Secret named in the environment is copied inside the
  cluster as `<name>-slipway-<release id>` (labelled); the rollback copies the data back.
  Values never leave the cluster: only the copies' names reach the journal. The copies of
  the `keep_secret_copies` newest releases are kept, older ones deleted.
- **Cleanup**: after a rollback, the Jobs, Pods and PVCs labelled with the release
  (`slipway.dev/release=<id>`) or named in the environment are deleted; missing ones are
  fine (kubectl's --ignore-not-found).

    state = KubeReleaseState(target)
    saved = state.save("20261202-101500-ab12", flags={"new_checkout": "on"})
    ...
    state.restore(saved)
    state.cleanup("20261202-101500-ab12")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from blocks.errors import SlipwayError

if TYPE_CHECKING:
    from tasks.rollout.kubernetes import KubernetesTarget

RELEASE_LABEL = "slipway.dev/release"
COPY_OF = "slipway.dev/copy-of"
STRATEGIC = "application/strategic-merge-patch+json"


def copy_name(secret: str, release_id: str) -> str:
    """A Secret's copy for a release: a valid name (lowercase, at most 253 characters)."""
    return f"{secret}-slipway-{release_id.lower()}"[:253].rstrip("-.")


class KubeReleaseState:
    """Flags, Secret copies and cleanup of one Kubernetes target's namespace."""

    def __init__(self, target: KubernetesTarget) -> None:
        self.target = target
        self.settings = target.settings
        self.namespace = target.settings.namespace

    def _core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.target.api)

    def _batch(self) -> Any:
        from kubernetes import client

        return client.BatchV1Api(self.target.api)

    # -- what a release saves and its rollback puts back --------------------------------------

    def save(self, release_id: str, flags: dict[str, str] | None = None) -> dict[str, Any]:
        """Copy the Secrets, then set `flags`; the record the rollback needs (no values of
        Secrets in it)."""
        record: dict[str, Any] = {"secret_copies": {}, "flags_before": None}
        for secret in self.settings.secrets:
            record["secret_copies"][secret] = self._copy_secret(secret, release_id)
        if self.settings.secrets:
            self.prune_copies(keep=self.settings.keep_secret_copies)
        if self.settings.flags_configmap:
            record["flags_before"] = self.flags()
            if flags:
                self.set_flags(flags)
        elif flags:
            raise SlipwayError(
                "this environment names no flags ConfigMap: set the target's flags_configmap"
            )
        return record

    def restore(self, record: dict[str, Any]) -> list[str]:
        """Put the Secrets' and the flags' data back as saved; what was restored."""
        done = []
        for secret, copy in (record.get("secret_copies") or {}).items():
            source = self.target.call(
                f"reading secret {copy}", self._core().read_namespaced_secret, copy, self.namespace
            )
            self.target.call(
                f"restoring secret {secret}",
                self._core().patch_namespaced_secret,
                secret,
                self.namespace,
                [{"op": "replace", "path": "/data", "value": source.data or {}}],
                _content_type="application/json-patch+json",
            )
            done.append(f"secret {secret}")
        before = record.get("flags_before")
        if before is not None and self.settings.flags_configmap:
            if before != self.flags():
                self._write_flags(before, replace=True)
            done.append(f"flags {self.settings.flags_configmap}")
        return done

    def _copy_secret(self, secret: str, release_id: str) -> str:
        from kubernetes import client

        found = self.target.call(
            f"reading secret {secret}", self._core().read_namespaced_secret, secret, self.namespace
        )
        name = copy_name(secret, release_id)
        body = client.V1Secret(
            metadata=client.V1ObjectMeta(
                name=name,
                labels={RELEASE_LABEL: release_id, COPY_OF: secret},
            ),
            type=found.type,
            data=found.data or {},
        )
        self.target.call(
            f"copying secret {secret}", self._core().create_namespaced_secret, self.namespace, body
        )
        return name

    # -- flags --------------------------------------------------------------------------------

    def flags(self) -> dict[str, str]:
        name = self._flags_name()
        found = self.target.call(
            f"reading flags {name}", self._core().read_namespaced_config_map, name, self.namespace
        )
        return dict(found.data or {})

    def set_flags(self, flags: dict[str, str]) -> dict[str, str]:
        """Set keys of the flags ConfigMap, restart its readers; the data before."""
        before = self.flags()
        self._write_flags(flags, replace=False)
        return before

    def _flags_name(self) -> str:
        if not self.settings.flags_configmap:
            raise SlipwayError("this environment names no flags ConfigMap: set flags_configmap")
        return self.settings.flags_configmap

    def _write_flags(self, data: dict[str, str], *, replace: bool) -> None:
        name = self._flags_name()
        if replace:
            patch: Any = [{"op": "replace", "path": "/data", "value": data}]
            kind = "application/json-patch+json"
        else:
            patch, kind = {"data": data}, STRATEGIC
        self.target.call(
            f"writing flags {name}",
            self._core().patch_namespaced_config_map,
            name,
            self.namespace,
            patch,
            _content_type=kind,
        )
        for deployment in self.readers():
            self.target.restart(deployment)

    def readers(self) -> list[str]:
        """The environment's Deployments whose pods read the flags ConfigMap."""
        name = self.settings.flags_configmap
        found = []
        for service in self.settings.services:
            spec = self.target.deployment(service).spec.template.spec
            volumes = [v.config_map.name for v in spec.volumes or [] if v.config_map]
            refs = [
                e.config_map_ref.name
                for c in spec.containers
                for e in c.env_from or []
                if e.config_map_ref
            ]
            refs += [
                e.value_from.config_map_key_ref.name
                for c in spec.containers
                for e in c.env or []
                if e.value_from and e.value_from.config_map_key_ref
            ]
            if name in volumes or name in refs:
                found.append(service)
        return found

    # -- cleanup ------------------------------------------------------------------------------

    def cleanup(self, release_id: str) -> list[str]:
        """Delete the release's temporary Jobs, Pods and PVCs (labelled, or named in the
        environment); missing ones are fine. What was deleted."""
        selector = f"{RELEASE_LABEL}={release_id}"
        kinds = {
            "job": (self._batch().list_namespaced_job, self._batch().delete_namespaced_job),
            "pod": (self._core().list_namespaced_pod, self._core().delete_namespaced_pod),
            "pvc": (
                self._core().list_namespaced_persistent_volume_claim,
                self._core().delete_namespaced_persistent_volume_claim,
            ),
        }
        named = self.settings.cleanup
        deleted = []
        for kind, (listing, delete) in kinds.items():
            labelled = self.target.call(
                f"listing {kind}s of release {release_id}",
                listing,
                self.namespace,
                label_selector=selector,
            )
            names = {item.metadata.name for item in labelled.items}
            names |= set(getattr(named, f"{kind}s"))
            for name in sorted(names):
                gone = self.target.call(
                    f"deleting {kind} {name}",
                    delete,
                    name,
                    self.namespace,
                    propagation_policy="Background",
                    missing_ok=True,
                )
                if gone is not None:  # --ignore-not-found: a 404 is nothing to report
                    deleted.append(f"{kind} {name}")
        return deleted

    def prune_copies(self, keep: int) -> list[str]:
        """Delete the Secret copies of all but the `keep` newest releases (release ids sort
        by time); the names deleted."""
        found = self.target.call(
            "listing secret copies",
            self._core().list_namespaced_secret,
            self.namespace,
            label_selector=COPY_OF,
        )
        releases = sorted(
            {(s.metadata.labels or {}).get(RELEASE_LABEL, "") for s in found.items}, reverse=True
        )
        kept = set(releases[:keep])
        gone = []
        for secret in found.items:
            if (secret.metadata.labels or {}).get(RELEASE_LABEL, "") not in kept:
                self.target.call(
                    f"deleting secret {secret.metadata.name}",
                    self._core().delete_namespaced_secret,
                    secret.metadata.name,
                    self.namespace,
                )
                gone.append(str(secret.metadata.name))
        return sorted(gone)
