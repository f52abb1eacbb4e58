"""The fault tests share helpers (tests/faults/helpers.py, tests/conftest.py's leak check) by import, which
needs the repository root on sys.path: `python -m pytest` puts it there, a bare `pytest` does not."""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
