"""Imports stay at module top outside the command line, so the layers `lint-imports` checks are the real ones.

An import placed inside a function hides a dependency from the linter (and from the reader) and is how import
loops get dodged. Only indexd/cli/ keeps some, to start fast for `--help`, each with a comment saying why.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "indexd"
CLI = PACKAGE / "cli"


def function_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement inside a function or method body, however deeply nested."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)) and in_function:
                found.append(child)
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

    visit(tree, False)
    return found


def _modules(cli: bool) -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if (CLI in p.parents) == cli)


def test_the_scan_finds_imports_in_functions_and_methods() -> None:
    tree = ast.parse("import os\n"
                     "def f():\n    import json\n    def g():\n        from re import compile\n"
                     "class C:\n    def m(self):\n        import sys\n    async def a(self):\n        import io\n")
    assert sorted(ast.unparse(n) for n in function_imports(tree)) == [
        "from re import compile", "import io", "import json", "import sys"]


def _commented(lines: list[str], node: ast.stmt) -> bool:
    """A comment on the import's own line, or above the block of imports it belongs to."""
    if "#" in lines[node.lineno - 1]:
        return True
    above = node.lineno - 2
    while above >= 0 and lines[above].strip().startswith(("import ", "from ")):
        if "#" in lines[above]:
            return True
        above -= 1
    return above >= 0 and lines[above].strip().startswith("#")


def test_the_cli_says_why_each_import_inside_a_function_is_there() -> None:
    missing = []
    for path in _modules(cli=True):
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        missing += [f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {ast.unparse(node)}"
                    for node in function_imports(ast.parse(text)) if not _commented(lines, node)]
    assert missing == [], "say why these stay inside a function (e.g. '# heavy: SQLAlchemy, only for this " \
        "command'), or move them to module top:\n" + "\n".join(missing)


def test_no_import_inside_a_function_outside_the_cli() -> None:
    modules = _modules(cli=False)
    assert len(modules) > 50  # the scan sees the package
    offenders = [f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {ast.unparse(node)}"
                 for path in modules for node in function_imports(ast.parse(path.read_text(encoding="utf-8")))]
    assert offenders == [], "move these imports to module top (fix the layering if that makes a loop):\n" + \
        "\n".join(offenders)
