"""A SIMULATOR of the Kubernetes API server, for tests: not Kubernetes.

No API server can run on these machines, so Slipway's Kubernetes target is tested against
this HTTP-level simulation of the public API (https://kubernetes.io/docs/reference/
kubernetes-api/), cross-checked with kubectl 1.32 and the official Python client in
tests/test_k8s_simulator.py. What it covers:

- discovery (`/version`, `/api`, `/api/v1`, `/apis`, `/apis/apps/v1`, `/apis/batch/v1`,
  `/apis/authorization.k8s.io/v1`) and minimal OpenAPI v3 documents (what kubectl reads
  before `create`/`apply` to leave field validation to the server);
- apps/v1 Deployments (`status`, `scale`) and ReplicaSets, v1 Namespaces, ConfigMaps,
  Secrets, Pods (`status`, `log`), PersistentVolumeClaims, Services (stored only),
  batch/v1 Jobs (deleting one without a propagation policy orphans its Pods, with the
  real server's warning);
- get, list and watch with label selectors (equality and set-based) and field selectors,
  create, replace (409 on a stale resourceVersion), the three patch kinds, delete (with
  owner-reference garbage collection), deletecollection, `dryRun=All`, Tables for kubectl;
- `resourceVersion`, `uid`, `creationTimestamp`, `generation`, defaulting, the validation
  errors that matter here, and `Status` error bodies (400, 403, 404, 409, 410, 415, 422);
- authorisation as a test sets it: everything allowed but the (verb, resource) pairs it
  forbids (403), and SelfSubjectAccessReview (`kubectl auth can-i`) answering the same;
- a deployment controller, a replica set controller (revisions, rollbacks reusing a
  ReplicaSet, rolling updates, Recreate, progress deadline, pause) and a job controller,
  and a kubelet running each Pod's first container on a real Docker engine with readiness
  probes, image pull and crash-loop backoff, run-to-completion for restartPolicy
  Never/OnFailure (or in-process fake Pods without Docker);
- per Deployment, a Service-like 127.0.0.1 port reaching its ready Pods.

Not covered: authentication (a Bearer token is accepted and ignored), protobuf (but for
access reviews), server-side apply, OpenAPI schemas, admission webhooks, scheduling,
nodes, Services' networking (use `KubeSimulator.service_url`), graceful termination
(deleted Pods go at once), events, proportional scaling of several active ReplicaSets,
Jobs' indexed completion, pod failure policies and active deadlines.
"""

from tests.k8s_sim.simulator import KubeSimulator

__all__ = ["KubeSimulator"]
