"""A SIMULATOR of the Kubernetes API server, for tests: not Kubernetes.

No API server can run on these machines, so Slipway's Kubernetes target is tested against
this HTTP-level simulation of the public API (https://kubernetes.io/docs/reference/
kubernetes-api/), cross-checked with kubectl 1.32 and the official Python client in
tests/test_k8s_simulator.py. What it covers:

- discovery (`/version`, `/api`, `/api/v1`, `/apis`, `/apis/apps/v1`, `/apis/batch/v1`);
- apps/v1 Deployments (`status`, `scale`) and ReplicaSets, v1 Namespaces, ConfigMaps,
  Secrets, Pods, PersistentVolumeClaims, Services (stored only), batch/v1 Jobs (stored
  only: no job controller);
- get, list and watch with label selectors (equality and set-based) and field selectors,
  create, replace (409 on a stale resourceVersion), the three patch kinds, delete (with
  owner-reference garbage collection), deletecollection, `dryRun=All`;
- `resourceVersion`, `uid`, `creationTimestamp`, `generation`, defaulting, the validation
  errors that matter here, and `Status` error bodies (404, 409, 422, 400, 410, 415);
- a deployment controller and a replica set controller (revisions, rollbacks reusing a
  ReplicaSet, rolling updates, progress deadline, pause) and a kubelet running each Pod's
  first container on a real Docker engine with readiness probes, image pull and
  crash-loop backoff (or in-process fake Pods without Docker);
- per Deployment, a Service-like 127.0.0.1 port reaching its ready Pods.

Not covered: authentication and authorisation (a Bearer token is accepted and ignored),
protobuf, server-side apply, OpenAPI documents, admission webhooks, scheduling, nodes,
Services' networking (use `KubeSimulator.service_url`), graceful termination.
"""

from tests.k8s_sim.simulator import KubeSimulator

__all__ = ["KubeSimulator"]
