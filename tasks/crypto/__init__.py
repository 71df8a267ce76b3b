"""age encryption of backups: keys, and streaming stages."""
