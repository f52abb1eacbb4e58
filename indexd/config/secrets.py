"""Secrets kept in files the configuration names: a database's password_file and the HTTP token_file.

One reader for both, so every caller (connections, pg_dump's passfile, check-config, the HTTP server) reads
them the same way and fails with the same message: the key path and the file, never the file's content.
"""

from __future__ import annotations

from pathlib import Path

from indexd.config.schema import DatabaseSettings, HttpSettings
from indexd.errors import ConfigError


def read_secret_file(path: str, key: str) -> str:
    """The file's text without surrounding whitespace; ConfigError naming `key` if it is unreadable or empty."""
    try:
        secret = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{key}: {path} is not UTF-8 text") from None
    if not secret:
        raise ConfigError(f"{key}: {path} is empty")
    return secret


def file_password(db: DatabaseSettings) -> str | None:
    """The password in the database's password_file, or None when it has none configured."""
    if not db.password_file:
        return None
    return read_secret_file(db.password_file, f"databases.{db.name}.password_file")


def read_token(settings: HttpSettings) -> str | None:
    """The bearer token of the HTTP endpoints, or None when http.token_file is not set."""
    return read_secret_file(settings.token_file, "http.token_file") if settings.token_file else None
