"""The three ways the kubernetes target reaches a cluster, over HTTPS with a bearer token.

The simulator serves TLS with a certificate from its own CA and answers 401 to any other
token, as an API server does: a kubeconfig with the CA and the token, a credentials block,
and a pod's service account (in-cluster), each read the Deployments for real, and each
wrong CA or token is refused in one line.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from blocks.errors import SlipwayError
from blocks.kubernetes_credentials import KubernetesCredentials
from tasks.rollout.kubernetes import KubernetesTarget
from tests.k8s_sim import KubeSimulator
from tests.k8s_sim.tls import ServingCert
from tests.kube_app import KubeApp, create_kube_app, write_kubeconfig

TOKEN = "sa-token-4f1c"  # noqa: S105 - the simulated service account's, not a secret


@pytest.fixture(scope="module")
def sim() -> Iterator[KubeSimulator]:
    with KubeSimulator(tls=True, token=TOKEN) as simulator:
        yield simulator
        assert simulator.errors == []


@pytest.fixture
def app(sim: KubeSimulator, tmp_path: Path) -> KubeApp:
    return create_kube_app(sim, tmp_path, health=False)


def test_a_kubeconfig_with_the_clusters_ca_and_token(app: KubeApp, tmp_path: Path) -> None:
    assert app.sim.url.startswith("https://127.0.0.1:")
    with KubernetesTarget(app.settings()) as target:
        assert target.live_versions().services == {s: ["v1"] for s in app.services}

    wrong = write_kubeconfig(
        tmp_path / "wrong-token",
        app.sim.url,
        app.namespace,
        ca_pem=app.sim.ca_pem,
        token="nope",  # noqa: S106
    )
    with (
        KubernetesTarget(app.settings(kubeconfig=str(wrong))) as target,
        pytest.raises(SlipwayError) as refused,
    ):
        target.live_versions()
    assert "\n" not in str(refused.value)
    assert "401" in str(refused.value) or "Unauthorized" in str(refused.value)

    untrusted = write_kubeconfig(
        tmp_path / "other-ca",
        app.sim.url,
        app.namespace,
        ca_pem=ServingCert().ca_pem,
        token=TOKEN,
    )
    with (
        KubernetesTarget(app.settings(kubeconfig=str(untrusted))) as target,
        pytest.raises(SlipwayError) as refused,
    ):
        target.live_versions()
    assert "\n" not in str(refused.value)
    assert "certificate" in str(refused.value)


def test_a_credentials_block_with_the_ca(app: KubeApp) -> None:
    credentials = KubernetesCredentials(
        server=app.sim.url, certificate_authority=app.sim.ca_pem, token=SecretStr(TOKEN)
    )
    settings = app.settings(kubeconfig=None, credentials_block="unused-here")
    with KubernetesTarget(settings, api=credentials.api_client()) as target:
        assert target.live_versions().services == {s: ["v1"] for s in app.services}
        assert target.preflight("v2").checks[0] == f"namespace {app.namespace} answers"


IN_POD = """
import json, sys
from blocks.errors import SlipwayError
from blocks.rollout_kubernetes import KubernetesTargetSettings
from tasks.rollout.kubernetes import KubernetesTarget
settings = KubernetesTargetSettings.model_validate(json.loads(sys.argv[1]))
try:
    with KubernetesTarget(settings) as target:
        print(json.dumps(target.live_versions().services))
except SlipwayError as exc:
    sys.exit(f"error: {exc}")
"""


def in_a_pod(app: KubeApp, tmp: Path, token: str) -> subprocess.CompletedProcess[str]:
    """Run the target as a pod would: the service account mounted where the client looks
    for it (a private mount namespace: /run is a fresh tmpfs there only) and the API
    server's address in KUBERNETES_SERVICE_HOST/PORT."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.fail("in-cluster test needs root and unshare(1) (util-linux)")
    account = tmp / "serviceaccount"
    account.mkdir(parents=True)
    (account / "token").write_text(token)
    (account / "ca.crt").write_text(app.sim.ca_pem or "")
    (account / "namespace").write_text(app.namespace)
    host, port = app.sim.url.removeprefix("https://").rsplit(":", 1)
    mount = textwrap.dedent(
        """\
        mount -t tmpfs slipway-pod /run
        mkdir -p /run/secrets/kubernetes.io/serviceaccount
        mount --bind "$ACCOUNT" /run/secrets/kubernetes.io/serviceaccount
        exec "$@"
        """
    )
    settings = {
        "kind": "kubernetes",
        "namespace": app.namespace,
        "services": list(app.services),
        "in_cluster": True,
    }
    env = os.environ | {
        "ACCOUNT": str(account),
        "KUBERNETES_SERVICE_HOST": host,
        "KUBERNETES_SERVICE_PORT": port,
    }
    return subprocess.run(
        [
            *("unshare", "--mount", "--propagation", "private", "sh", "-c", mount, "sh"),
            *(sys.executable, "-c", IN_POD, json.dumps(settings)),
        ],
        env=env,
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_in_cluster_reads_the_pods_service_account(app: KubeApp, tmp_path: Path) -> None:
    ran = in_a_pod(app, tmp_path / "good", TOKEN)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout) == {s: ["v1"] for s in app.services}

    refused = in_a_pod(app, tmp_path / "bad", "another-account")
    assert refused.returncode == 1
    assert "Traceback" not in refused.stderr
    assert "401" in refused.stderr or "Unauthorized" in refused.stderr
