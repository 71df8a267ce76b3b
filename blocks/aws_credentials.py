"""How Slipway reaches AWS (an ECS target), as a Prefect block: keys, optionally a role.

    credentials = AwsCredentials(access_key_id="AKIA...", secret_access_key=SecretStr("..."),
                                 region="eu-west-3",
                                 role_arn="arn:aws:iam::123456789012:role/slipway-deploy")
    credentials.save("production-aws")   # the target's credentials_block
    ecs = credentials.client("ecs")      # a boto3 client, through the assumed role

As prefect-aws's `AwsCredentials` hands out boto3 sessions and clients, without the
dependency. Without a block, boto3's standard chain applies (environment, profile, SSO,
instance or task role): `session(None, region)`.
"""

from __future__ import annotations

from typing import Any

import boto3
from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from blocks.base import load_named
from blocks.errors import ConfigError

ROLE_SESSION = "slipway"


class AwsCredentials(Block):
    """An access key (and session token), a region, and optionally a role to assume."""

    _block_type_name = "Slipway AWS Credentials"
    _block_type_slug = "slipway-aws-credentials"
    _description = "The AWS access key (and role) Slipway releases to ECS with."

    access_key_id: str | None = Field(
        default=None, description="Access key id (empty: boto3's standard chain)."
    )
    secret_access_key: SecretStr | None = Field(default=None, description="Secret access key.")
    session_token: SecretStr | None = Field(
        default=None, description="Session token of temporary credentials."
    )
    region: str | None = Field(
        default=None, description="Region (empty: the target's, else the standard chain's)."
    )
    role_arn: str | None = Field(
        default=None,
        description="A role to assume through STS with these credentials, e.g. "
        "arn:aws:iam::123456789012:role/slipway-deploy.",
    )
    external_id: SecretStr | None = Field(
        default=None, description="The external id the role's trust policy requires."
    )
    endpoint_url: str | None = Field(
        default=None,
        description="One endpoint for every AWS API (a test double, or an ECS-compatible "
        "service); empty: AWS's.",
    )

    @classmethod
    def resolve(cls, block_name: str) -> AwsCredentials:
        return load_named(cls, block_name)

    def session(self, region: str | None = None) -> boto3.Session:
        """A boto3 session with these credentials (the role's, when one is given)."""
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ConfigError(
                "the AwsCredentials block needs both access_key_id and secret_access_key, "
                "or neither (boto3's standard chain)"
            )
        base = boto3.Session(
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key.get_secret_value()
            if self.secret_access_key
            else None,
            aws_session_token=self.session_token.get_secret_value() if self.session_token else None,
            region_name=region or self.region,
        )
        if not self.role_arn:
            return base
        return assumed(base, self.role_arn, self.external_id, self.endpoint_url)

    def client(self, service: str, region: str | None = None) -> Any:
        """A boto3 client of `service` ("ecs", "ecr", "sts") through `session()`."""
        return self.session(region).client(service, endpoint_url=self.endpoint_url)  # type: ignore[call-overload]


def assumed(
    base: boto3.Session,
    role_arn: str,
    external_id: SecretStr | None = None,
    endpoint_url: str | None = None,
) -> boto3.Session:
    """A session holding the role's temporary credentials (an hour: one release's worth)."""
    sts = base.client("sts", endpoint_url=endpoint_url)
    if external_id is not None:
        answer = sts.assume_role(
            RoleArn=role_arn,
            RoleSessionName=ROLE_SESSION,
            ExternalId=external_id.get_secret_value(),
        )
    else:
        answer = sts.assume_role(RoleArn=role_arn, RoleSessionName=ROLE_SESSION)
    keys = answer["Credentials"]
    return boto3.Session(
        aws_access_key_id=keys["AccessKeyId"],
        aws_secret_access_key=keys["SecretAccessKey"],
        aws_session_token=keys["SessionToken"],
        region_name=base.region_name,
    )
