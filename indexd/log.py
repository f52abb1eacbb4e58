"""Logging: JSON lines (or readable text) to stderr and a gzip-rotated file, job ids, and secret scrubbing.

`setup_logging` may be called again on reload: it replaces only the handlers it installed before.
`job_context` gives every line a job run causes (in that thread) the same short id. Every record passes
through `scrub` (message, arguments, traceback), so a DSN password never reaches a log.
"""

from __future__ import annotations

import contextvars
import gzip
import logging
import logging.handlers
import os
import re
import secrets
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from io import TextIOWrapper
from pathlib import Path
from typing import Any, Protocol

from pythonjsonlogger.json import JsonFormatter

from indexd.dsn import redact_dsn
from indexd.errors import ConfigError
from indexd.private import create_private_dir, open_private

_ENV_PASSWORD = re.compile(r"(?i)\b((?:PG|DB_)?PASSWORD['\"]?\s*[=:]\s*)('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|\S+)")
_JOB = contextvars.ContextVar[tuple[str, str, str | None] | None]("indexd_job", default=None)
_OURS = "_indexd_handler"  # attribute marking the handlers setup_logging installed
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
_OWN_FIELDS = {"job", "job_id", "database"}


class LogTarget(Protocol):
    """What `setup_logging` reads: the `logging` section of the settings (config.schema.LoggingSettings). Named
    here so this module stays a leaf that config, db and everything above can use."""

    @property
    def level(self) -> str: ...
    @property
    def file(self) -> str | None: ...
    @property
    def max_bytes(self) -> int: ...
    @property
    def backup_count(self) -> int: ...
    @property
    def format(self) -> str: ...
    @property
    def stderr(self) -> bool: ...


def scrub(text: str) -> str:
    """Text with DSN passwords and password=/PGPASSWORD= values replaced by ***."""
    if "assword" not in text and "ASSWORD" not in text and "://" not in text:
        return text
    return redact_dsn(_ENV_PASSWORD.sub(r"\1***", text))


@contextmanager
def job_context(job: str, database: str | None = None) -> Iterator[str]:
    """Run a job under a fresh id (e.g. 'capture-main-1a2b3c') that every log line in this thread carries."""
    job_id = "-".join(p for p in (job, database, secrets.token_hex(3)) if p)
    token = _JOB.set((job, job_id, database))
    try:
        yield job_id
    finally:
        _JOB.reset(token)


def current_job_id() -> str | None:
    current = _JOB.get()
    return current[1] if current else None


class JobFilter(logging.Filter):
    """Adds job, job_id and database from the job context (an explicit `extra=` value wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        current = _JOB.get()
        if current is not None:
            job, job_id, database = current
            for name, value in (("job", job), ("job_id", job_id), ("database", database)):
                if getattr(record, name, None) is None and value is not None:
                    setattr(record, name, value)
        return True


class SecretsFilter(logging.Filter):
    """Scrubs the message, its arguments and any traceback of a record before it is formatted."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed call: let the handler report it as usual
            return True
        record.msg, record.args = scrub(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        return True


def _iso(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class IndexdJsonFormatter(JsonFormatter):
    """One JSON object per line: time, level, logger, message, job, job_id, database, extras, exc_info."""

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        log_data["time"] = _iso(record)
        log_data["level"] = record.levelname
        log_data["logger"] = record.name
        log_data["message"] = scrub(record.getMessage())
        for name in ("job", "job_id", "database"):
            if getattr(record, name, None) is not None:
                log_data[name] = getattr(record, name)
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in _OWN_FIELDS and not key.startswith("_"):
                log_data[key] = scrub(value) if isinstance(value, str) else value
        for key, value in message_dict.items():
            log_data[key] = scrub(value) if isinstance(value, str) else value

    def formatException(self, ei: Any) -> str:  # noqa: N802 - logging's name
        return scrub(str(super().formatException(ei)))


class TextFormatter(logging.Formatter):
    """`2026-01-01T01:00:00.000Z INFO indexd.backup [backup-main-1a2b3c] message`."""

    def format(self, record: logging.LogRecord) -> str:
        job = getattr(record, "job_id", None)
        line = f"{_iso(record)} {record.levelname:<7} {record.name}{f' [{job}]' if job else ''} {record.getMessage()}"
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += "\n" + record.exc_text
        return scrub(line)


def gzip_namer(name: str) -> str:
    return name + ".gz"


def gzip_rotator(source: str, dest: str) -> None:
    """Compress the file just rotated out into `dest` (already named .gz, created 0600), then remove it."""
    fd = open_private(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    with open(source, "rb") as src, open(fd, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb") as out:
        shutil.copyfileobj(src, out)
    os.remove(source)


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A size-rotated log file only indexd's user can read (0600, like the backups): log lines name databases,
    roles and statements. There is no group setting for logs, so there is no group-readable mode either."""

    def _open(self) -> TextIOWrapper:  # logging's hook, called on the first write and after each rotation
        fd = open_private(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        return open(fd, "a", encoding=self.encoding, errors=self.errors)  # the handler appends (mode 'a')


def _file_handler(settings: LogTarget) -> logging.Handler:
    path = Path(settings.file or "")
    try:
        create_private_dir(path.parent)
        handler = PrivateRotatingFileHandler(
            path, maxBytes=int(settings.max_bytes), backupCount=settings.backup_count, encoding="utf-8"
        )
    except OSError as exc:
        raise ConfigError(
            f"logging.file: cannot write {path}: {exc.strerror}; create {path.parent} for the indexd user, "
            "choose another path, or set logging.file: null to log to stderr only"
        ) from None
    handler.namer = gzip_namer
    handler.rotator = gzip_rotator
    return handler


def setup_logging(settings: LogTarget) -> None:
    """Install (or re-install, on reload) indexd's handlers on the root logger."""
    handlers: list[logging.Handler] = []
    if settings.file:
        handlers.append(_file_handler(settings))
    if settings.stderr:
        handlers.append(logging.StreamHandler(sys.stderr))
    formatter: logging.Formatter = IndexdJsonFormatter() if settings.format == "json" else TextFormatter()
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(JobFilter())
        handler.addFilter(SecretsFilter())
        setattr(handler, _OURS, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _OURS, False)]:
        root.removeHandler(old)
        old.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(settings.level)
