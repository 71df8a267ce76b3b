"""The S3 or MinIO bucket (and prefix) where Slipway keeps backups, as a Prefect block."""

from __future__ import annotations

from blocks.base import SlipwayBlock
from blocks.settings import StorageSettings


class ObjectStorage(StorageSettings, SlipwayBlock):
    """An S3-compatible bucket and prefix with its own endpoint and credentials.

    Slipway's own block rather than prefect-aws's `AwsCredentials` + `S3Bucket`: one block
    carries endpoint, bucket, prefix and keys (MinIO needs all four), and Slipway's tasks
    call boto3 directly, so prefect-aws would add a dependency without removing code.
    Without keys, boto3's default chain applies (environment, profile, instance role).
    """

    _block_type_name = "Slipway Object Storage"
    _block_type_slug = "slipway-object-storage"
    _description = "An S3 or MinIO bucket and prefix for Slipway's backups."
