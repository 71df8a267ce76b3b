"""PostgreSQL: connections, dump and restore streams, the backup catalog, leases and restore side databases."""
