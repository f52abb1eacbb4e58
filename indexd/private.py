"""Files and folders only the indexd user may read: one rule for backups and logs.

Backups hold the data and logs name databases, roles and statements, so both are written 0600 inside folders
indexd creates 0700. Files are created with the mode (never widened by the umask and then narrowed, which
leaves a window), and a file of ours found with a wider mode is narrowed when it is opened. A leaf module:
the standard library only, so logging can use it.
"""

from __future__ import annotations

import os
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def _make_missing(path: Path) -> None:
    """Create every missing folder of `path`, each exactly 0700 (mkdir -p would give the parents the umask's
    mode, 0755: a backups.dir indexd created would then fail its own production check); existing ones stay."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue  # made by another process meanwhile: not ours to change
        os.chmod(folder, DIR_MODE)  # exactly 0700, whatever the umask


def ensure_private_dir(path: Path) -> Path:
    """Create `path` with mode 0700, and its missing parents too (backups.dir above a database's folder); tighten
    the last component if it already exists.

    Only for folders that are indexd's own (a backup folder per database), never for one it may share."""
    _make_missing(path)
    if (path.stat().st_mode & 0o777) != DIR_MODE:
        os.chmod(path, DIR_MODE)
    return path


def create_private_dir(path: Path) -> Path:
    """Create a missing `path` (and parents) with mode 0700 for the last component; leave an existing one as it
    is (a log file's folder may be a shared one such as /var/log, whose mode is not ours to change)."""
    if not path.is_dir():
        _make_missing(path)
    return path


def open_private(path: str | os.PathLike[str], flags: int) -> int:
    """os.open with mode 0600 for a new file; an existing file of ours with a wider mode is narrowed to 0600."""
    fd = os.open(path, flags, FILE_MODE)
    try:
        if os.fstat(fd).st_mode & 0o777 != FILE_MODE:
            os.fchmod(fd, FILE_MODE)
    except OSError:
        os.close(fd)
        raise
    return fd
