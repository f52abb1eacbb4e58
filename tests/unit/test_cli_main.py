"""The command line's own behaviour, apart from any command: output into a closed pipe."""

from __future__ import annotations

import json
import subprocess
import sys
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
