"""Reaching the Kubernetes API: the client the settings describe, and one call's failure as
one line naming what was asked and the fix.

    api = api_client(settings)
    deployment = api_call("shop", "reading deployment api",
                          client.AppsV1Api(api).read_namespaced_deployment, "api", "shop")
"""

from __future__ import annotations

import ssl
from typing import Any

from blocks.errors import ConfigError, SlipwayError
from blocks.rollout_kubernetes import KubernetesTargetSettings
from blocks.text import one_line


def api_client(settings: KubernetesTargetSettings) -> Any:
    """A `kubernetes.client.ApiClient` as the settings say to reach the cluster."""
    from kubernetes import client, config

    if settings.credentials_block:
        from blocks.kubernetes_credentials import KubernetesCredentials

        return KubernetesCredentials.resolve(settings.credentials_block).api_client()
    try:
        if settings.in_cluster:
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            return client.ApiClient(configuration)
        return config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=settings.kubeconfig, context=settings.context
        )
    except config.ConfigException as exc:
        raise ConfigError(
            f"no way to reach the cluster ({one_line(str(exc), 120)}): set kubeconfig and "
            "context, in_cluster, or credentials_block"
        ) from exc


def api_call(
    namespace: str, what: str, call: Any, *args: Any, missing_ok: bool = False, **kwargs: Any
) -> Any:
    """One API call; its failure as one line naming what was asked (`missing_ok`: None
    for a 404)."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError, SSLError

    try:
        return call(*args, **kwargs)
    except ApiException as exc:
        if missing_ok and exc.status == 404:
            return None
        reason = exc.reason or ""
        if exc.status == 403:
            raise SlipwayError(
                f"{what}: forbidden: give Slipway's service account that permission "
                f"in namespace {namespace}"
            ) from exc
        if exc.status == 401:
            raise SlipwayError(
                f"{what}: 401 Unauthorized: the API server refused the credentials: check "
                "the token (kubeconfig user, service account, or credentials_block)"
            ) from exc
        raise SlipwayError(f"{what}: {exc.status} {reason}".strip()) from exc
    except (HTTPError, OSError) as exc:
        cause = getattr(exc, "reason", None) or exc  # a MaxRetryError's last failure
        if isinstance(cause, SSLError | ssl.SSLError):
            raise SlipwayError(
                f"{what}: the API server's certificate is not trusted "
                f"({one_line(str(cause), 120)}): check the cluster's CA (kubeconfig "
                "certificate-authority, or credentials_block)"
            ) from exc
        raise SlipwayError(
            f"{what}: the API server does not answer ({one_line(str(cause), 120)}): check "
            "the kubeconfig's server, or credentials_block"
        ) from exc
