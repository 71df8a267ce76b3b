"""The error type for bad configuration and bad input: one line that names the problem and the fix."""


class SlipwayError(Exception):
    """An expected failure with a one-line message naming the problem and the fix."""


class ConfigError(SlipwayError):
    """Configuration is missing or malformed."""
