"""Slipway's error types: one line that names the problem and the fix."""


class SlipwayError(Exception):
    """An expected failure with a one-line message naming the problem and the fix."""


class ConfigError(SlipwayError):
    """Configuration is missing or malformed."""


class BackupDamaged(SlipwayError):
    """The stored backup itself is wrong (size, checksum, format, contents): a verdict on it.

    Only this failure may mark a backup as not verified; a local one (disk, scratch
    database, server, S3 unreachable) says nothing about the backup.
    """
