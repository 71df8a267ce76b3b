"""The S3 or MinIO bucket (and prefix) where Slipway keeps backups."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from pydantic import Field, SecretStr

from blocks.base import SlipwayBlock
from blocks.errors import ConfigError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


class ObjectStorage(SlipwayBlock):
    """An S3-compatible bucket and prefix with its own endpoint and credentials.

    Slipway's own block rather than prefect-aws's `AwsCredentials` + `S3Bucket`: one block
    carries endpoint, bucket, prefix and keys (MinIO needs all four), and Slipway's tasks
    call boto3 directly, so prefect-aws would add a dependency without removing code.
    Without keys, boto3's default chain applies (environment, profile, instance role).
    """

    _block_type_name = "Slipway Object Storage"
    _block_type_slug = "slipway-object-storage"
    _description = "An S3 or MinIO bucket and prefix for Slipway's backups."

    bucket: str = Field(description="Bucket name.")
    prefix: str = Field(
        default="", description="Key prefix inside the bucket, e.g. 'backups/prod'."
    )
    endpoint_url: str | None = Field(default=None, description="S3 endpoint (MinIO: its URL).")
    region: str | None = Field(default=None, description="Region (AWS); MinIO accepts any.")
    access_key_id: str | None = Field(default=None, description="Access key id.")
    secret_access_key: SecretStr | None = Field(default=None, description="Secret access key.")

    @classmethod
    def from_url(cls, url: str) -> ObjectStorage:
        """`s3://bucket/prefix`, endpoint and credentials from the AWS SDK's variables."""
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ConfigError(f"backup URL {url!r} must look like s3://bucket/prefix")
        secret = os.environ.get("AWS_SECRET_ACCESS_KEY")
        return cls(
            bucket=parts.netloc,
            prefix=parts.path.strip("/"),
            endpoint_url=os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL"),
            region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"),
            access_key_id=os.environ.get("AWS_ACCESS_KEY_ID"),
            secret_access_key=SecretStr(secret) if secret else None,
        )

    @classmethod
    def from_env(cls) -> ObjectStorage:
        url = os.environ.get("SLIPWAY_BACKUP_URL")
        if not url:
            raise ConfigError(
                "no backup store configured: set SLIPWAY_BACKUP_URL=s3://bucket/prefix "
                "or pass a block name"
            )
        return cls.from_url(url)

    def key(self, *parts: str) -> str:
        """A key under this store's prefix."""
        return "/".join(p.strip("/") for p in (self.prefix, *parts) if p.strip("/"))

    def url(self, *parts: str) -> str:
        return f"s3://{self.bucket}/{self.key(*parts)}"

    def client(self) -> S3Client:
        session = boto3.session.Session(
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=(
                self.secret_access_key.get_secret_value() if self.secret_access_key else None
            ),
            region_name=self.region or "us-east-1",
        )
        return session.client(
            "s3",
            endpoint_url=self.endpoint_url,
            config=Config(
                s3={
                    "addressing_style": "path" if self.endpoint_url else "auto",
                    # Parts carry a CRC32 and the whole dump a sha256 of our own: a second
                    # sha256 pass for SigV4 (botocore's default over plain HTTP) adds nothing.
                    "payload_signing_enabled": False,
                },
                retries={"mode": "standard", "max_attempts": 5},
                connect_timeout=10,
                read_timeout=120,
                max_pool_connections=16,
            ),
        )
