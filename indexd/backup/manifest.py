"""Backup manifests: the JSON file written last beside each dump, the commit marker and source of truth.

Layout under `backups.dir`: `<database>/<id>.dump` (custom format) or `<database>/<id>.dir/` (directory
format), each with `<database>/<id>.manifest.json`. A dump is written as `.<id>.partial` first; a backup
without a manifest does not exist as far as listing, retention and restore are concerned.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from indexd.dsn import redact_dsn
from indexd.errors import BackupError
from indexd.private import FILE_MODE

MANIFEST_VERSION = 1
MANIFEST_SUFFIX = ".manifest.json"
PARTIAL_PREFIX = "."
PARTIAL_SUFFIX = ".partial"
_CHUNK = 1024 * 1024
_YAML_SECRET = re.compile(r"^(\s*[A-Za-z_]*(?:password|secret|token)[A-Za-z_]*\s*:\s*)(\S.*)$",
                          re.IGNORECASE | re.MULTILINE)
GOOD_STATUSES = ("completed", "verified")
FOREIGN = "foreign"  # a manifest indexd did not write as it stands: listed, never deleted, verified or restored
FORMATS = ("custom", "directory")
_ID_TIME = "%Y%m%dT%H%M%SZ"
_ID_STAMP = re.compile(r"[0-9]{8}T[0-9]{6}Z")


@dataclass(frozen=True)
class BackupInfo:
    """One backup as retention and listing see it (from its manifest, or a leftover without one)."""

    id: str
    database: str
    started_at: datetime
    status: str  # completed | verified | failed | partial (a leftover with no manifest)
    path: Path
    format: str = "custom"
    finished_at: datetime | None = None
    size_bytes: int = 0
    sha256: str | None = None
    verified_at: datetime | None = None
    error: str | None = None
    manifest: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def manifest_path(self) -> Path | None:
        # A foreign entry's id is untrusted text: no path is ever built from it.
        return manifest_path(self.path.parent, self.id) if self.status not in ("partial", FOREIGN) else None


def backup_id(database: str, at: datetime) -> str:
    return f"{database}-{at.astimezone(UTC).strftime(_ID_TIME)}"


def is_backup_id(bid: str, database: str) -> bool:
    """True when `bid` has exactly the shape `backup_id(database, ...)` gives: `<database>-YYYYMMDDTHHMMSSZ`."""
    try:
        check_name(database)
    except BackupError:
        return False
    prefix = f"{database}-"
    return bid.startswith(prefix) and _ID_STAMP.fullmatch(bid[len(prefix):]) is not None


def check_name(database: str) -> str:
    """A database name must be usable as one path component (it names the folder of its backups)."""
    if not database or database in (".", "..") or "/" in database or "\0" in database:
        raise BackupError(f"database name {database!r} cannot name a backup folder (no '/', not '.' or '..')")
    return database


def data_path(folder: Path, bid: str, fmt: str) -> Path:
    return folder / (f"{bid}.dir" if fmt == "directory" else f"{bid}.dump")


def partial_path(folder: Path, bid: str) -> Path:
    return folder / f"{PARTIAL_PREFIX}{bid}{PARTIAL_SUFFIX}"


def manifest_path(folder: Path, bid: str) -> Path:
    return folder / f"{bid}{MANIFEST_SUFFIX}"


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def checksum_files(root: Path) -> tuple[str, list[dict[str, Any]]]:
    """SHA-256 of a dump: of the file itself, or for a directory over its files in sorted order.

    The directory digest is the SHA-256 of the lines '<sha256>  <name>\\n' of every file, sorted by name,
    so it changes when any file changes, appears or disappears.
    """
    if root.is_file():
        return sha256_file(root), [{"name": root.name, "size": root.stat().st_size, "sha256": sha256_file(root)}]
    files = []
    combined = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        name = path.relative_to(root).as_posix()
        digest = sha256_file(path)
        files.append({"name": name, "size": path.stat().st_size, "sha256": digest})
        combined.update(f"{digest}  {name}\n".encode())
    return combined.hexdigest(), files


def redact_config_text(text: str) -> str:
    """A configuration file's text with passwords, secrets and tokens masked (DSNs and YAML keys)."""
    return _YAML_SECRET.sub(r"\1***", redact_dsn(text))


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON to a temporary file in the same folder, fsync it, rename it over `path`, fsync the folder."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), FILE_MODE)
            json.dump(data, fh, indent=2, sort_keys=True, default=str)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_path(path.parent)


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def info_from_manifest(path: Path, data: dict[str, Any]) -> BackupInfo:
    """The backup a manifest describes; its data path is built only from an id of indexd's own shape."""
    bid = str(data["id"])
    database = str(data["database"])
    if not is_backup_id(bid, database):
        raise ValueError(f"id {bid!r} is not a backup id of database {database!r} (<database>-YYYYMMDDTHHMMSSZ)")
    fmt = str(data.get("format", "custom"))
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is none of {', '.join(FORMATS)}")
    started = _time(data.get("started_at"))
    if started is None:
        raise ValueError("manifest has no started_at")
    return BackupInfo(
        id=bid,
        database=database,
        started_at=started,
        status=str(data.get("status", "completed")),
        path=data_path(path.parent, bid, fmt),
        format=fmt,
        finished_at=_time(data.get("finished_at")),
        size_bytes=int(data.get("size_bytes") or 0),
        sha256=data.get("sha256"),
        verified_at=_time(data.get("verified_at")),
        error=data.get("error"),
        manifest=data,
    )


def read_manifest(path: Path) -> BackupInfo:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return info_from_manifest(path, data)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BackupError(f"unreadable backup manifest {path}: {exc}") from exc


def update_manifest(info: BackupInfo, **changes: Any) -> BackupInfo:
    """Rewrite a backup's manifest atomically with some keys changed (status, verified_at, ...)."""
    path = info.manifest_path
    if path is None:
        raise BackupError(f"backup {info.id} has no manifest to update")
    data = dict(info.manifest)
    data.update({k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in changes.items()})
    write_json_atomic(path, data)
    return info_from_manifest(path, data)


def manifest_time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def checksum_problems(info: BackupInfo) -> list[str]:
    """Re-check a backup's data against its manifest: empty when every file and the digest match."""
    if info.status == FOREIGN:
        return [f"backup {info.id!r}: manifest {info.path} is foreign ({info.error}), its data is not read"]
    if not info.path.exists():
        return [f"backup {info.id}: {info.path} is missing"]
    digest, files = checksum_files(info.path)
    if digest == info.sha256:
        return []
    expected = {f["name"]: f.get("sha256") for f in info.manifest.get("files", [])}
    actual = {f["name"]: f["sha256"] for f in files}
    changed = [name for name in sorted(expected) if name in actual and actual[name] != expected[name]]
    problems = [f"{name}: checksum mismatch" for name in changed]
    problems += [f"{name}: missing" for name in sorted(set(expected) - set(actual))]
    problems += [f"{name}: not in the manifest" for name in sorted(set(actual) - set(expected))]
    return [f"backup {info.id}: SHA-256 {digest[:12]}... differs from the manifest's {str(info.sha256)[:12]}..."
            ] + problems
