"""Object storage: S3 and local locations, copies, bucket mirrors and snapshots."""
