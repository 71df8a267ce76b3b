"""How to reach a Kubernetes API server without a kubeconfig, as a Prefect block.

    credentials = KubernetesCredentials(server="https://k8s.example.com:6443",
                                        certificate_authority=Path("ca.crt").read_text(),
                                        token=SecretStr(token))
    credentials.save("production-kubernetes")   # the target's credentials_block
    api = credentials.api_client()              # a kubernetes.client.ApiClient

The token is a secret; the CA is not, but the client library wants it in a file, written
with the block's client and removed when the process ends.
"""

from __future__ import annotations

import atexit
import os
import tempfile
from typing import Any

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from blocks.base import load_named


class KubernetesCredentials(Block):
    """An API server URL, its CA certificate and a bearer token (a service account's)."""

    _block_type_name = "Slipway Kubernetes Credentials"
    _block_type_slug = "slipway-kubernetes-credentials"
    _description = "The Kubernetes API server Slipway releases to, and its token."

    server: str = Field(description="The API server, e.g. https://k8s.example.com:6443.")
    certificate_authority: str | None = Field(
        default=None, description="The CA certificate (PEM) the server's certificate is signed by."
    )
    token: SecretStr = Field(description="A bearer token, e.g. a service account's.")
    verify_tls: bool = Field(default=True, description="Verify the server's certificate.")

    @classmethod
    def resolve(cls, block_name: str) -> KubernetesCredentials:
        return load_named(cls, block_name)

    def api_client(self) -> Any:
        """A `kubernetes.client.ApiClient` for this server."""
        from kubernetes import client

        configuration = client.Configuration()
        configuration.host = self.server.rstrip("/")
        configuration.api_key = {"authorization": self.token.get_secret_value()}
        configuration.api_key_prefix = {"authorization": "Bearer"}
        configuration.verify_ssl = self.verify_tls
        if self.certificate_authority:
            configuration.ssl_ca_cert = _ca_file(self.certificate_authority)
        return client.ApiClient(configuration)


def _ca_file(pem: str) -> str:
    handle, path = tempfile.mkstemp(prefix="slipway-k8s-ca-", suffix=".crt")
    with os.fdopen(handle, "w") as file:
        file.write(pem)
    atexit.register(_remove, path)
    return path


def _remove(path: str) -> None:
    if os.path.exists(path):
        os.unlink(path)
