"""The PostgreSQL database Slipway backs up, migrates and restores, as a Prefect block."""

from __future__ import annotations

from blocks.base import SlipwayBlock
from blocks.settings import PostgresSettings


class PostgresDatabase(PostgresSettings, SlipwayBlock):
    """Connection settings for one PostgreSQL database; the password is a secret."""

    _block_type_name = "Slipway PostgreSQL Database"
    _block_type_slug = "slipway-postgres-database"
    _description = "A PostgreSQL database Slipway backs up, migrates and restores."
