"""The command line's own behaviour, apart from any command: output into a closed pipe."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest


def test_output_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    config = tmp_path / "indexd.yaml"
    config.write_text("databases:\n  - name: main\n    dsn: postgresql://indexd@127.0.0.1/app\n")
    # The reader is gone before indexd writes a byte, as with `indexd status | head -0`.
    proc = subprocess.Popen([sys.executable, "-m", "indexd", "--config", str(config), "check-config"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=30) == 1
    assert "Traceback" not in err and "BrokenPipe" not in err


def test_json_output_writes_timestamps_as_iso_8601(capsys: pytest.CaptureFixture[str]) -> None:
    from datetime import UTC, datetime
    from decimal import Decimal

    from indexd.cli.common import print_json

    print_json({"at": datetime(2026, 11, 23, 7, 33, 51, tzinfo=UTC), "n": Decimal("1.5")})
    assert json.loads(capsys.readouterr().out) == {"at": "2026-11-23T07:33:51+00:00", "n": "1.5"}


def test_help_says_what_the_defaults_mean(capsys: pytest.CaptureFixture[str]) -> None:
    from indexd.cli import SCENARIO_HELP, main
    from indexd.simulate.scenario import scenario

    with pytest.raises(SystemExit):
        main(["pause", "--help"])
    assert "until 'indexd resume'" in " ".join(capsys.readouterr().out.split())
    for name in ("small", "medium", "large"):  # the sizes the help quotes are the scenarios' own
        rows = scenario(name).approx_rows
        quoted = f"{rows / 1000:.0f}k" if rows < 1_000_000 else f"{rows / 1_000_000:.1f}M"
        assert f"{name} ~{quoted}" in SCENARIO_HELP


@pytest.mark.parametrize("argv", [["restore", "b1", "--target-db", "x", "--jobs", "-3"],
                                  ["simulate", "--dsn", "host=x", "--clients", "0"],
                                  ["restore", "b1", "--target-db", "x", "--jobs", "two"]])
def test_counts_must_be_positive(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from indexd.cli import main

    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "must be at least 1" in err or "expected a whole number, got 'two'" in err


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield path + (name,)
                yield from _commands(sub, path + (name,))


def test_every_command_states_the_exit_codes_once(capsys: pytest.CaptureFixture[str]) -> None:
    from indexd.cli import build_parser, main

    commands = list(_commands(build_parser()))
    assert ("backup", "prune") in commands and ("status",) in commands
    for command in [(), *commands]:
        with pytest.raises(SystemExit):
            main([*command, "--help"])
        out = capsys.readouterr().out
        assert out.count("exit codes: 0 ok, 1 failure, 2 usage or config error, 3 refused by a guard") == 1, command
        assert "the worst wins: 2, then 1, then 3, then 0" in out, command


@pytest.mark.parametrize("argv", [["restore", "b1", "--target-db", "x", "--dsn", "postgresql://u:hunter2@h/db"],
                                  ["restore", "b1", "--target-db", "x", "--dsn=host=h password=hunter2"],
                                  ["pause", "now", "postgresql://u:hunter2@h/db"]])
def test_a_usage_error_never_prints_a_password(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from indexd.cli import main

    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "hunter2" not in err


def test_several_config_problems_are_listed_under_one_heading(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from indexd.cli import main

    config = tmp_path / "indexd.yaml"
    config.write_text("databases:\n  - name: main\n    dsn: postgresql://u:hunter2@127.0.0.1/app\n"
                      "    pool: {size: -5}\nbogus_key: 1\n")
    assert main(["--config", str(config), "status"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "indexd: the configuration has 2 problems:"
    assert len(lines) == 3 and all(line.startswith("  ") and "(line " in line for line in lines[1:])
    assert any("bogus_key (line 5)" in line for line in lines) and "hunter2" not in "".join(lines)


def test_every_command_shows_examples_that_parse(capsys: pytest.CaptureFixture[str]) -> None:
    import shlex

    from indexd.cli import EXAMPLES, build_parser, main

    commands = list(_commands(build_parser()))
    assert set(EXAMPLES) == {""} | {" ".join(c) for c in commands}  # every command has its examples
    for command in [(), *commands]:
        with pytest.raises(SystemExit):
            main([*command, "--help"])
        out = capsys.readouterr().out
        examples = EXAMPLES[" ".join(command)]
        assert "examples:\n" in out and all(f"  {line}\n" in out for line in examples), command
        for line in examples:
            words = shlex.split(line)
            assert words[0] == "indexd" and tuple(words[1:1 + len(command)]) == command, line
            build_parser().parse_args(words[1:])  # exits 2 on a wrong example
