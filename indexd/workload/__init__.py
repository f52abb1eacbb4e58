"""Workload: what the databases actually run (pg_stat_statements snapshots, offline query files)."""
