"""Backups: pg_dump runs, manifests, verification, retention and restore."""
