"""Which manifests indexd may act on: only those it could have written itself, in place.

A manifest is trusted when it is a regular file (not a symbolic link) named `<id>.manifest.json`, its `id` has
exactly the shape indexd gives ids (`<database>-YYYYMMDDTHHMMSSZ`), its `database` is the folder it lies in, its
`format` is one indexd writes, and its data (`<id>.dump` or `<id>.dir/`) is no symbolic link, contains none and
resolves to a direct child of that folder. Anything else is *foreign*: listed with the reason, never deleted,
verified or restored, and no path is ever built from its fields.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from indexd.backup.manifest import (
    FOREIGN,
    FORMATS,
    MANIFEST_SUFFIX,
    BackupInfo,
    data_path,
    info_from_manifest,
    is_backup_id,
)
from indexd.errors import BackupError

log = logging.getLogger(__name__)

_MAX_MANIFEST_BYTES = 16 * 1024 * 1024


def _load(path: Path) -> dict[str, Any]:
    """The manifest's JSON, read without following a symbolic link (O_NOFOLLOW closes the race with lstat)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as fh:
            raw = fh.read(_MAX_MANIFEST_BYTES + 1)
        if len(raw) > _MAX_MANIFEST_BYTES:
            raise ValueError(f"larger than {_MAX_MANIFEST_BYTES} bytes")
        data = json.loads(raw.decode("utf-8"))
    except (OSError, ValueError) as exc:
        raise BackupError(f"unreadable backup manifest {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise BackupError(f"unreadable backup manifest {path}: not a JSON object")
    return data


def _contains_link(root: Path) -> bool:
    for top, dirs, files in os.walk(root):
        if any(os.path.islink(os.path.join(top, name)) for name in dirs + files):
            return True
    return False


def _data_problem(folder: Path, data_at: Path) -> str | None:
    """Why the data path of a manifest cannot be trusted, or None."""
    if data_at.is_symlink():
        return f"its data {data_at.name} is a symbolic link"
    try:
        resolved = data_at.resolve()
    except (OSError, RuntimeError) as exc:
        return f"its data path cannot be resolved ({exc})"
    if resolved.parent != folder.resolve():
        return f"its data resolves to {resolved}, outside {folder}"
    if data_at.is_dir() and _contains_link(data_at):
        return f"its data folder {data_at.name} contains a symbolic link"
    return None


def foreign_reason(folder: Path, manifest: Path, data: dict[str, Any]) -> str | None:
    """Why the manifest at `manifest` (in the database folder `folder`) is foreign, or None when indexd's own."""
    bid, database, fmt = data.get("id"), data.get("database"), data.get("format", "custom")
    if not isinstance(bid, str) or not isinstance(database, str):
        return "its id or database is missing or not text"
    if database != folder.name:
        return f"its database {database!r} is not the folder it lies in ({folder.name!r})"
    if not is_backup_id(bid, database):
        return f"its id {bid!r} is not of the form {database}-YYYYMMDDTHHMMSSZ"
    if manifest.name != f"{bid}{MANIFEST_SUFFIX}":
        return f"its file name is not {bid}{MANIFEST_SUFFIX}"
    if fmt not in FORMATS:
        return f"its format {fmt!r} is none of {', '.join(FORMATS)}"
    return _data_problem(folder, data_path(folder, bid, str(fmt)))


def _when(value: Any, fallback: Path) -> datetime:
    try:
        parsed = datetime.fromisoformat(str(value))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except ValueError:
        return datetime.fromtimestamp(fallback.lstat().st_mtime, UTC)


def foreign_info(folder: Path, manifest: Path, data: dict[str, Any], reason: str) -> BackupInfo:
    """A foreign manifest as listing shows it: its own file as the path, its fields as untrusted text only."""
    shown = data.get("id")
    return BackupInfo(
        id=shown if isinstance(shown, str) and shown else manifest.name[: -len(MANIFEST_SUFFIX)],
        database=folder.name, started_at=_when(data.get("started_at"), manifest), status=FOREIGN,
        path=manifest, format=str(data.get("format", "custom")), error=reason,
    )


def vet_manifest(folder: Path, manifest: Path) -> BackupInfo:
    """The backup a manifest in `folder` describes, or a foreign entry (with a warning naming the manifest).

    Raises BackupError when the manifest cannot be read at all (as `read_manifest` does)."""
    if manifest.is_symlink():
        reason = "the manifest is a symbolic link"
        data: dict[str, Any] = {}
    else:
        data = _load(manifest)
        reason = foreign_reason(folder, manifest, data) or ""
    if not reason:
        try:
            return info_from_manifest(manifest, data)
        except (ValueError, KeyError, TypeError) as exc:
            raise BackupError(f"unreadable backup manifest {manifest}: {exc}") from exc
    log.warning("backup manifest %s is foreign (%s): skipped; it is never deleted, verified or restored",
                manifest, reason)
    return foreign_info(folder, manifest, data, reason)


def require_own(info: BackupInfo, action: str) -> BackupInfo:
    """Refuse to `action` (verify, restore, delete ...) a foreign backup; returns `info` otherwise."""
    if info.status == FOREIGN:
        raise BackupError(f"refusing to {action} backup {info.id!r}: manifest {info.path} is foreign "
                          f"({info.error}); indexd did not write it as it stands, remove it by hand if unwanted")
    return info
