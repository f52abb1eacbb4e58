"""docs/architecture.md describes the code as it is: its layer diagram is the import-linter's layers, and every
module file it names exists."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")


def _diagram_layers() -> list[str]:
    block = DOC.split("## 1. Layers", 1)[1].split("```", 2)[1]
    layers = []
    for line in block.splitlines():
        if not line.strip() or line.strip() == "│":
            continue
        layers.append(re.split(r"\s{2,}", line.strip(), maxsplit=1)[0])
    return layers


def test_the_layer_diagram_is_the_linters() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    (layers,) = [c["layers"] for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers"]
    assert _diagram_layers() == layers


def test_every_module_file_it_names_exists() -> None:
    named = set(re.findall(r"`([a-z_]+(?:/[a-z_]+)*\.py)", DOC))
    assert len(named) > 40
    missing = sorted(p for p in named if not (ROOT / "indexd" / p).exists() and not (ROOT / p).exists())
    assert missing == []
