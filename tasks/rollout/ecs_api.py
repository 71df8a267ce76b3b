"""The AWS clients of an ecs target, and every boto3 failure as one line.

One boto3 session per target (an AwsCredentials block's, else boto3's standard chain) hands
out the ECS, ECR, STS and IAM clients. `AwsApi.call` runs one operation and turns what can
go wrong (no credentials, rejected ones, a denied action, a missing cluster or service, an
endpoint that does not answer) into a `SlipwayError` naming the operation and the fix.
"""

from __future__ import annotations

from typing import Any

from blocks.errors import ConfigError, SlipwayError
from blocks.rollout_ecs import EcsTargetSettings
from blocks.text import one_line

REJECTED = {
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidSignatureException",
    "IncompleteSignature",
}
DENIED = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"}
NO_CREDENTIALS = (
    "no AWS credentials found: set the target's credentials_block, or give boto3's standard "
    "chain some (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, an instance or "
    "task role)"
)


def _client_config() -> Any:
    from botocore.config import Config

    # Bounded: a preflight must not hang on an endpoint that does not answer.
    return Config(
        connect_timeout=10, read_timeout=60, retries={"mode": "standard", "max_attempts": 3}
    )


class AwsApi:
    """Lazily opened boto3 clients for one ecs target; `close()` closes them."""

    def __init__(self, settings: EcsTargetSettings) -> None:
        self.settings = settings
        self._session: Any = None
        self._clients: dict[str, Any] = {}
        self._credentials: Any = None

    def session(self) -> Any:
        if self._session is None:
            self._session = self.call("sts", "AssumeRole", self._open_session)
        return self._session

    def _open_session(self) -> Any:
        import boto3

        block = self._block()
        if block is not None:
            return block.session(self.settings.region)
        return boto3.Session(region_name=self.settings.region)

    def _block(self) -> Any:
        """The AwsCredentials block named by the settings, loaded once (None: none named)."""
        if self.settings.credentials_block and self._credentials is None:
            from blocks.aws_credentials import AwsCredentials

            self._credentials = AwsCredentials.resolve(self.settings.credentials_block)
        return self._credentials

    def client(self, service: str) -> Any:
        """The boto3 client of `service` ("ecs", "ecr", "sts", "iam")."""
        if service not in self._clients:
            endpoint = self.settings.endpoint_url if service == "ecs" else None
            block = self._block()
            if endpoint is None and block is not None:
                endpoint = block.endpoint_url
            self._clients[service] = self.session().client(
                service, endpoint_url=endpoint, config=_client_config()
            )
        return self._clients[service]

    def ecs(self, operation: str, /, **kwargs: Any) -> Any:
        """One ECS operation (`DescribeServices`), its answer."""
        return self.request("ecs", operation, **kwargs)

    def request(self, service: str, operation: str, /, **kwargs: Any) -> Any:
        from botocore import xform_name

        method = getattr(self.client(service), xform_name(operation))
        return self.call(service, operation, method, **kwargs)

    def call(self, service: str, operation: str, method: Any, /, **kwargs: Any) -> Any:
        """`method(**kwargs)`; its failure as one line naming `service:operation`."""
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectionError,
            NoCredentialsError,
            NoRegionError,
            PartialCredentialsError,
        )
        from botocore.parsers import ResponseParserError

        action = f"{service}:{operation}"
        try:
            return method(**kwargs)
        except ClientError as exc:
            raise SlipwayError(self.explain(action, exc, kwargs)) from exc
        except (NoCredentialsError, PartialCredentialsError) as exc:
            raise ConfigError(f"{action}: {NO_CREDENTIALS}") from exc
        except NoRegionError as exc:
            raise ConfigError(f"{action}: no region: set the target's region") from exc
        except ConnectionError as exc:
            where = self.endpoint(service)
            raise SlipwayError(
                f"{action}: cannot reach {where} ({one_line(str(exc), 100)}): check region "
                "and endpoint_url"
            ) from exc
        except ResponseParserError as exc:  # not botocore's BotoCoreError
            raise SlipwayError(
                f"{action}: {self.endpoint(service)} answered no AWS API response "
                f"({one_line(str(exc), 80)}): check endpoint_url"
            ) from exc
        except BotoCoreError as exc:
            raise SlipwayError(f"{action}: {one_line(str(exc), 200)}") from exc

    def endpoint(self, service: str) -> str:
        client = self._clients.get(service)
        return str(client.meta.endpoint_url) if client is not None else f"{service} endpoint"

    def explain(self, action: str, exc: Any, kwargs: dict[str, Any]) -> str:
        """A `ClientError` as one line: what failed and what to do."""
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        message = one_line(str(error.get("Message", "")), 200)
        cluster, region = self.settings.cluster, self.settings.region
        if code == "ClusterNotFoundException":
            return f"{action}: cluster {cluster} not found in {region}: check cluster and region"
        if code in ("ServiceNotFoundException", "ServiceNotActiveException"):
            service = kwargs.get("service") or ", ".join(kwargs.get("services", []))
            state = "not found" if code == "ServiceNotFoundException" else "not active"
            return (
                f"{action}: service {service} {state} in cluster {cluster}: check services "
                "(or create it)"
            )
        if code in DENIED:
            return (
                f"{action}: access denied ({message}): allow {action} to Slipway's "
                "credentials in their IAM policy"
            )
        if code in REJECTED:
            return (
                f"{action}: AWS rejected the credentials ({code}): check the access key of "
                "credentials_block (or of the standard chain), and that it is not expired"
            )
        if code in ("ThrottlingException", "Throttling", "TooManyRequestsException"):
            return f"{action}: throttled by AWS ({message}): retry later"
        return f"{action}: {code}: {message}" if message else f"{action}: {code}"

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()
        self._session = None
