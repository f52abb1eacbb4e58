"""The table `backups`: the catalog that mirrors the manifests on disk (they stay the source of truth, so a
restore works when the database is gone). One row per backup id, refreshed as the backup moves on."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg2 import sql
from psycopg2.extras import Json

from indexd.db.pool import PgConnection


@dataclass(frozen=True)
class CatalogRow:
    """A backup as the catalog stores it."""

    id: str
    database: str
    started_at: datetime
    finished_at: datetime | None
    status: str  # running | completed | verified | failed | deleted
    format: str
    path: str
    size_bytes: int | None
    sha256: str | None
    verified_at: datetime | None  # when its checksum last matched
    error: str | None
    manifest: dict[str, Any] | None
    test_restore_at: datetime | None = None  # its last test restore, a fact apart from the checksum's
    test_restore_result: str | None = None  # ok | incomplete | failed | error (sql/050_backup_test_restore.sql)
    test_restore_detail: str | None = None


_UPSERT = """
INSERT INTO {}.backups (id, database, started_at, finished_at, status, format, path, size_bytes, sha256,
                        verified_at, error, manifest, test_restore_at, test_restore_result, test_restore_detail)
VALUES (%(id)s, %(database)s, %(started_at)s, %(finished_at)s, %(status)s, %(format)s, %(path)s,
        %(size_bytes)s, %(sha256)s, %(verified_at)s, %(error)s, %(manifest)s, %(test_restore_at)s,
        %(test_restore_result)s, %(test_restore_detail)s)
ON CONFLICT (id) DO UPDATE SET finished_at = EXCLUDED.finished_at, status = EXCLUDED.status,
    size_bytes = EXCLUDED.size_bytes, sha256 = EXCLUDED.sha256, verified_at = EXCLUDED.verified_at,
    error = EXCLUDED.error, manifest = EXCLUDED.manifest, test_restore_at = EXCLUDED.test_restore_at,
    test_restore_result = EXCLUDED.test_restore_result, test_restore_detail = EXCLUDED.test_restore_detail
"""


def upsert_backup(conn: PgConnection, schema: str, row: CatalogRow) -> None:
    """Insert the backup's row, or refresh everything but its identity (id, database, start, format, path)."""
    params = {
        "id": row.id, "database": row.database, "started_at": row.started_at, "finished_at": row.finished_at,
        "status": row.status, "format": row.format, "path": row.path, "size_bytes": row.size_bytes,
        "sha256": row.sha256, "verified_at": row.verified_at, "error": row.error,
        "manifest": Json(row.manifest) if row.manifest else None, "test_restore_at": row.test_restore_at,
        "test_restore_result": row.test_restore_result, "test_restore_detail": row.test_restore_detail,
    }
    with conn.cursor() as cur:
        cur.execute(sql.SQL(_UPSERT).format(sql.Identifier(schema)), params)
