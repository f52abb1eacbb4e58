"""Walking pglast parse trees: the direct sub-nodes of a node, and every node below it in order."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pglast import ast


def children(node: Any) -> Iterator[Any]:
    """The direct sub-nodes of a parse-tree node (or of a list of them)."""
    if isinstance(node, (tuple, list)):
        for item in node:
            if isinstance(item, (tuple, list)):
                yield from children(item)
            elif isinstance(item, ast.Node):
                yield item
        return
    if isinstance(node, ast.Node):
        for name in node:
            value = getattr(node, name)
            if isinstance(value, ast.Node):
                yield value
            elif isinstance(value, (tuple, list)):
                yield from children(value)


def walk(node: Any, into_subqueries: bool = True) -> Iterator[Any]:
    """The node and every node below it, depth first; without `into_subqueries` a SubLink's body is skipped."""
    yield node
    if not into_subqueries and isinstance(node, ast.SubLink):
        return
    for child in children(node):
        yield from walk(child, into_subqueries)
