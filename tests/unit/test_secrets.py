"""One reader for secret files: connections, pg_dump's passfile and the HTTP token all fail the same way."""

from __future__ import annotations

from pathlib import Path

import pytest

from indexd.backup.command import password_of
from indexd.config.schema import DatabaseSettings, HttpSettings
from indexd.config.secrets import file_password, read_secret_file, read_token
from indexd.db.conninfo import connect_kwargs
from indexd.errors import ConfigError


def _db(password_file: Path | None) -> DatabaseSettings:
    return DatabaseSettings(name="main", dsn="host=127.0.0.1 dbname=app user=bob",
                            password_file=str(password_file) if password_file else None)


def test_the_secret_is_the_file_text_without_surrounding_whitespace(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("  s3cret\n", encoding="utf-8")
    assert read_secret_file(str(secret), "x.y") == "s3cret"
    assert file_password(_db(secret)) == "s3cret"
    assert connect_kwargs(_db(secret))["password"] == "s3cret"
    assert password_of({}, _db(secret)) == "s3cret"
    assert file_password(_db(None)) is None and "password" not in connect_kwargs(_db(None))


@pytest.mark.parametrize("content", [None, "", "  \n"])
def test_a_missing_or_empty_file_is_the_same_error_for_every_reader(tmp_path: Path, content: str | None) -> None:
    secret = tmp_path / "pw"
    if content is not None:
        secret.write_text(content, encoding="utf-8")
    readers = [lambda: connect_kwargs(_db(secret)), lambda: password_of({}, _db(secret)),
               lambda: file_password(_db(secret))]
    messages = set()
    for read in readers:
        with pytest.raises(ConfigError) as caught:
            read()
        messages.add(str(caught.value))
    (message,) = messages
    assert message.startswith(f"databases.main.password_file: {'cannot read ' if content is None else ''}{secret}")
    with pytest.raises(ConfigError, match=r"^http\.token_file: "):
        read_token(HttpSettings(token_file=str(secret)))


def test_a_password_in_the_dsn_wins_over_the_file(tmp_path: Path) -> None:
    assert password_of({"password": "inline"}, _db(tmp_path / "missing")) == "inline"
