"""Releases: preflight checks, the release journal, the deploy lock and approvals."""
