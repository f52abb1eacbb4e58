"""The external-command wrapper, exercised with real small commands (no database)."""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from pathlib import Path

import pytest

from indexd.backup.command import CommandFailed, find_binary, libpq_connection, run_command
from indexd.config.schema import DatabaseSettings


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_success_streams_lines_to_the_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="indexd.backup.command")
    result = run_command(["sh", "-c", "echo out-line; echo err-line >&2"])
    assert result.returncode == 0
    messages = [r.getMessage() for r in caplog.records]
    assert "sh: out-line" in messages and "sh: err-line" in messages


def test_failure_raises_with_exit_code_and_stderr_tail() -> None:
    with pytest.raises(CommandFailed) as info:
        run_command(["sh", "-c", "echo starting; echo 'boom happened' >&2; exit 3"])
    assert "exited with code 3" in str(info.value) and "boom happened" in str(info.value)
    assert info.value.result is not None and info.value.result.returncode == 3


def test_no_check_returns_the_code() -> None:
    assert run_command(["sh", "-c", "exit 4"], check=False).returncode == 4


def test_capture_stdout_keeps_every_line() -> None:
    result = run_command(["sh", "-c", "for i in 1 2 3; do echo line$i; done"], capture_stdout=True)
    assert result.stdout == ("line1", "line2", "line3")


def test_passwords_in_output_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="indexd.backup.command")
    with pytest.raises(CommandFailed) as info:
        run_command(["sh", "-c", "echo 'postgresql://u:s3cret@h/db' >&2; exit 1"])
    assert "s3cret" not in caplog.text and "s3cret" not in str(info.value)


def test_timeout_terminates_the_whole_process_tree(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    started = time.monotonic()
    with pytest.raises(CommandFailed, match="timed out"):
        run_command(["sh", "-c", f"sleep 60 & echo $! > {pidfile}; wait"], timeout=0.5, grace_s=2)
    assert time.monotonic() - started < 5
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 3
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child), "the grandchild sleep survived"


def test_cancel_event_stops_the_command() -> None:
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(CommandFailed, match="cancelled") as info:
        run_command(["sleep", "30"], cancel=cancel)
    assert time.monotonic() - started < 5
    assert info.value.result is not None and info.value.result.cancelled


def test_sigterm_ignoring_child_is_killed_after_grace() -> None:
    started = time.monotonic()
    with pytest.raises(CommandFailed):
        run_command(["sh", "-c", "trap '' TERM; sleep 30 & wait; sleep 30"], timeout=0.3, grace_s=0.5)
    assert time.monotonic() - started < 5


def test_missing_binary_is_a_clear_error() -> None:
    with pytest.raises(CommandFailed, match="cannot run"):
        run_command(["/nonexistent/pg_dump", "--version"])


def test_binary_override_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INDEXD_PG_DUMP", "/opt/stub/pg_dump")
    assert find_binary("pg_dump") == "/opt/stub/pg_dump"


def test_password_goes_to_a_private_passfile_not_the_conninfo() -> None:
    dsn = "postgresql://alice:p%3Ass%5Cw0rd@127.0.0.1:5433/app"
    with libpq_connection(dsn) as conn:
        assert "p:ss" not in conn.conninfo and "password" not in conn.conninfo
        assert "dbname=app" in conn.conninfo and "user=alice" in conn.conninfo
        path = Path(conn.env["PGPASSFILE"])
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.read_text() == "*:*:*:*:p\\:ss\\\\w0rd\n"
        assert "PGPASSWORD" in conn.drop_env
    assert not path.exists()


def test_password_file_setting_is_used(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    db = DatabaseSettings(name="m", dsn="host=127.0.0.1 dbname=x user=bob", password_file=str(secret))
    with libpq_connection(db.dsn, db, dbname="other") as conn:
        assert "dbname=other" in conn.conninfo
        assert Path(conn.env["PGPASSFILE"]).read_text() == "*:*:*:*:from-file\n"


def test_no_password_means_no_passfile() -> None:
    with libpq_connection("host=127.0.0.1 dbname=x user=bob") as conn:
        assert conn.env == {}


def test_child_environment_is_private(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSWORD", "leaky")
    result = run_command(["sh", "-c", 'echo "${PGPASSWORD:-unset} $PGPASSFILE"'], env={"PGPASSFILE": "/x"},
                         drop_env=("PGPASSWORD",), capture_stdout=True)
    assert result.stdout == ("unset /x",)
    assert os.environ["PGPASSWORD"] == "leaky"


def test_interrupt_in_the_caller_ends_the_child(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"

    def interrupt() -> None:
        import _thread

        _thread.interrupt_main()

    threading.Timer(0.5, interrupt).start()
    with pytest.raises(KeyboardInterrupt):
        run_command(["sh", "-c", f"echo $$ > {pidfile}; sleep 30"], grace_s=1)
    deadline = time.monotonic() + 3
    pid = int(pidfile.read_text())
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)
