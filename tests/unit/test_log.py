"""Logging: JSON fields, job ids, secret scrubbing everywhere a secret can hide, gzip rotation."""

from __future__ import annotations

import gzip
import json
import logging
import logging.handlers
import os
import re
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from indexd.config.schema import ByteSize, LoggingSettings
from indexd.errors import ConfigError
from indexd.log import current_job_id, job_context, scrub, setup_logging

log = logging.getLogger("indexd.test")


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)


def configure(tmp_path: Path, **overrides: object) -> Path:
    path = tmp_path / "logs" / "indexd.log"
    fields: dict[str, object] = {"file": str(path), "stderr": False, "level": "DEBUG"}
    fields.update(overrides)
    setup_logging(LoggingSettings(**fields))  # type: ignore[arg-type]
    return path


def lines(path: Path) -> list[dict[str, object]]:
    for handler in logging.getLogger().handlers:
        handler.flush()
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_json_line_fields(tmp_path: Path) -> None:
    path = configure(tmp_path)
    log.info("built %d indexes", 2, extra={"table": "orders"})
    (line,) = lines(path)
    assert list(line)[:4] == ["time", "level", "logger", "message"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", str(line["time"]))
    assert (line["level"], line["logger"], line["message"]) == ("INFO", "indexd.test", "built 2 indexes")
    assert line["table"] == "orders"
    assert "job_id" not in line and "job" not in line and "database" not in line


def test_log_directory_is_created(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "indexd.log"
    configure(tmp_path, file=str(path))
    log.warning("hello")
    assert [line["message"] for line in lines(path)] == ["hello"]


def test_unwritable_log_location_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "not_a_dir").write_text("x", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"logging.file: cannot write .*not_a_dir/indexd.log.*logging.file: null"):
        configure(tmp_path, file=str(tmp_path / "not_a_dir" / "indexd.log"))


def test_job_id_on_every_line_inside_the_job_and_absent_outside(tmp_path: Path) -> None:
    path = configure(tmp_path)
    log.info("before")
    with job_context("capture", "main") as job_id:
        log.info("one")
        logging.getLogger("indexd.other.module").warning("two")
        seen_elsewhere: list[str | None] = []
        worker = threading.Thread(target=lambda: (seen_elsewhere.append(current_job_id()), log.info("thread")))
        worker.start()
        worker.join()
    log.info("after")
    assert re.fullmatch(r"capture-main-[0-9a-f]{6}", job_id)
    by_message = {line["message"]: line for line in lines(path)}
    for message in ("one", "two"):
        line = by_message[message]
        assert (line["job"], line["job_id"], line["database"]) == ("capture", job_id, "main")
    for message in ("before", "after", "thread"):
        assert "job_id" not in by_message[message]
    assert seen_elsewhere == [None]


def test_job_ids_are_unique_and_nest(tmp_path: Path) -> None:
    with job_context("backup") as outer:
        with job_context("verify", "main") as inner:
            assert current_job_id() == inner
        assert current_job_id() == outer
    assert outer.startswith("backup-") and outer != inner
    assert current_job_id() is None


def test_password_scrubbed_from_message_args_and_traceback(tmp_path: Path) -> None:
    path = configure(tmp_path)
    dsn = "postgresql://indexd:hunter2@db1:5432/app"
    log.info("connecting to postgresql://indexd:hunter2@db1/app")
    log.info("connecting to %s", dsn)
    log.info("env %s", {"PGPASSWORD": "hunter2"})
    log.info("running with PGPASSWORD=hunter2 and password = 'hunter2 two'")
    try:
        raise RuntimeError(f"could not connect to {dsn} (host=db1 password=hunter2)")
    except RuntimeError:
        log.exception("capture failed")
    text = path.read_text(encoding="utf-8")
    assert "hunter2" not in text
    found = lines(path)
    assert found[1]["message"] == "connecting to postgresql://indexd:***@db1:5432/app"
    assert "RuntimeError: could not connect to postgresql://indexd:***@db1" in str(found[-1]["exc_info"])


def test_scrubbing_also_in_text_format_and_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = configure(tmp_path, format="text", stderr=True)
    with job_context("apply", "main") as job_id:
        log.error("failed on %s", "host=db1 password=hunter2")
    out = capsys.readouterr().err
    assert "hunter2" not in out and "hunter2" not in path.read_text(encoding="utf-8")
    assert re.fullmatch(
        rf"\S+Z ERROR   indexd\.test \[{job_id}\] failed on host=db1 password=\*\*\*\n", out
    )


def test_scrub() -> None:
    assert scrub("postgres://u:p@h/db") == "postgres://u:***@h/db"
    assert scrub("DB_PASSWORD=\"a b\" next") == "DB_PASSWORD=*** next"
    assert scrub("password authentication failed for user x") == "password authentication failed for user x"
    assert scrub("password_file: /etc/indexd/main.password") == "password_file: /etc/indexd/main.password"


def test_setup_is_idempotent(tmp_path: Path) -> None:
    configure(tmp_path)
    path = configure(tmp_path, level="INFO")
    ours = [h for h in logging.getLogger().handlers if getattr(h, "_indexd_handler", False)]
    assert len(ours) == 1
    log.debug("hidden")
    log.info("shown once")
    assert [line["message"] for line in lines(path)] == ["shown once"]


def test_rotated_files_are_gzip_compressed(tmp_path: Path) -> None:
    path = configure(tmp_path, max_bytes=ByteSize(1024), backup_count=2)
    for i in range(200):
        log.info("line %03d %s", i, "x" * 40)
    names = sorted(p.name for p in path.parent.iterdir())
    assert names == ["indexd.log", "indexd.log.1.gz", "indexd.log.2.gz"]
    with gzip.open(path.parent / "indexd.log.1.gz", "rt", encoding="utf-8") as f:
        rotated = [json.loads(line)["message"] for line in f]
    current = [line["message"] for line in lines(path)]
    assert rotated and rotated[-1] < current[0]  # .1 holds the lines just before the current file
    assert path.stat().st_size <= 1024


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_log_files_and_the_folder_indexd_creates_are_private_after_rotation(tmp_path: Path) -> None:
    old_umask = os.umask(0o002)  # a lax umask must not widen anything
    try:
        path = configure(tmp_path, max_bytes=ByteSize(1024), backup_count=2)
        for i in range(200):
            log.info("line %03d %s", i, "x" * 40)
        handler = next(h for h in logging.getLogger().handlers if getattr(h, "_indexd_handler", False))
        assert isinstance(handler, logging.handlers.RotatingFileHandler)
        handler.doRollover()  # one more, forced
    finally:
        os.umask(old_umask)
    files = sorted(path.parent.iterdir())
    assert [p.name for p in files] == ["indexd.log", "indexd.log.1.gz", "indexd.log.2.gz"]
    assert {p.name: _mode(p) for p in files} == dict.fromkeys((p.name for p in files), 0o600)
    assert _mode(path.parent) == 0o700


def test_an_existing_folder_is_left_alone_and_an_existing_log_is_narrowed(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    (shared / "indexd.log").write_text("", encoding="utf-8")
    (shared / "indexd.log").chmod(0o644)
    path = shared / "indexd.log"
    configure(tmp_path, file=str(path))
    log.info("hello")
    assert [line["message"] for line in lines(path)] == ["hello"]
    assert _mode(path) == 0o600 and _mode(shared) == 0o755  # a folder such as /var/log is not ours to change
