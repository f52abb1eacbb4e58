"""The command line's own behaviour, apart from any command: output into a closed pipe."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_output_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    config = tmp_path / "indexd.yaml"
    config.write_text("databases: []\n")
    # The reader is gone before indexd writes a byte, as with `indexd status | head -0`.
    proc = subprocess.Popen([sys.executable, "-m", "indexd", "--config", str(config), "check-config"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=30) == 1
    assert "Traceback" not in err and "BrokenPipe" not in err
