"""The configuration as a tree of values that remember where they came from (file line or variable).

YAML is composed safely into nodes (never arbitrary objects), so each value keeps its line; `${VAR}` and
`${VAR:-default}` are substituted in string values as the tree is built. Problems are collected, not raised,
so the operator sees all of them at once.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

_VAR = re.compile(r"\$(\$)|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_NUMERIC_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")


@dataclass
class Node:
    """A configuration value: a scalar, a list of Nodes or a dict of Nodes, with its origin."""

    value: Any
    line: int | None = None  # 1-based line in the file (of the key, for a mapping entry)
    env: str | None = None  # the environment variable that set it
    inherited: bool = False  # copied from a global section into a database entry

    @property
    def where(self) -> str:
        if self.env:
            return f"from ${self.env}"
        return f"line {self.line}" if self.line else "default"

    def plain(self) -> Any:
        """The value without origins (lists and dicts of plain values)."""
        if isinstance(self.value, dict):
            return {k: v.plain() for k, v in self.value.items()}
        if isinstance(self.value, list):
            return [v.plain() for v in self.value]
        return self.value


@dataclass
class Problems:
    """Every problem found, each as 'path (where): message', in the order found."""

    items: list[str] = field(default_factory=list)

    def add(self, path: str, node: Node | None, message: str) -> None:
        where = f" ({node.where})" if node is not None and node.where != "default" else ""
        text = f"{path or '<top>'}{where}: {message}"
        if text not in self.items:
            self.items.append(text)

    def __bool__(self) -> bool:
        return bool(self.items)


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def parse_yaml(text: str, source: str, env: Mapping[str, str], problems: Problems) -> Node | None:
    """Compose YAML text into a Node tree; syntax errors are reported with line and column."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        problems.items.append(f"{source} ({where}): YAML syntax error: {exc.problem or exc.context}")
        return None
    except yaml.YAMLError as exc:
        problems.items.append(f"{source}: YAML error: {exc}")
        return None
    if root is None:
        return Node({}, 1)
    try:
        return _convert(root, "", root.start_mark.line + 1, env, problems)
    except RecursionError:
        problems.items.append(f"{source}: the configuration nests too deeply (an alias that refers to itself?)")
        return None


def _convert(node: yaml.Node, path: str, line: int, env: Mapping[str, str], problems: Problems) -> Node:
    if isinstance(node, yaml.MappingNode):
        return _mapping(node, path, line, env, problems)
    if isinstance(node, yaml.ScalarNode):
        return Node(_scalar(node, path, line, env, problems), line)
    items = [
        _convert(item, join(path, i), item.start_mark.line + 1, env, problems) for i, item in enumerate(node.value)
    ]
    return Node(items, line)


def _mapping(node: yaml.MappingNode, path: str, line: int, env: Mapping[str, str], problems: Problems) -> Node:
    entries: dict[str, Node] = {}
    for key_node, value_node in node.value:
        key_line = key_node.start_mark.line + 1
        key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
        if key_node.tag == "tag:yaml.org,2002:merge":
            problems.add(path, Node(None, key_line), "YAML merge keys (<<) are not supported")
            continue
        if not isinstance(key, str) or not key:
            problems.add(path, Node(None, key_line), "keys must be plain names")
            continue
        if key in entries:
            problems.add(join(path, key), Node(None, key_line), f"duplicate key (first at line {entries[key].line})")
            continue
        entries[key] = _convert(value_node, join(path, key), key_line, env, problems)
    return Node(entries, line)


def _scalar(node: yaml.ScalarNode, path: str, line: int, env: Mapping[str, str], problems: Problems) -> Any:
    if node.style is None and node.tag in _NUMERIC_TAGS and ":" in node.value:
        return node.value  # YAML 1.1 reads 01:00 as sexagesimal 60; keep the text for times
    value = yaml.SafeLoader("").construct_object(node, deep=True)
    if isinstance(value, str) and "$" in value:
        return interpolate(value, env, lambda msg: problems.add(path, Node(None, line), msg))
    return value


def interpolate(text: str, env: Mapping[str, str], report: Any) -> str:
    """Substitute ${VAR} and ${VAR:-default}; $$ is a literal $. A missing variable is reported."""

    def sub(m: re.Match[str]) -> str:
        if m.group(1):
            return "$"
        name, default = m.group(2), m.group(3)
        if name in env and (env[name] != "" or default is None):
            return env[name]
        if default is not None:
            return default
        report(f"environment variable {name} is not set (set it, or write ${{{name}:-default}})")
        return ""

    return _VAR.sub(sub, text)


def inherit(node: Node) -> Node:
    """A deep copy marked as inherited, so its problems are reported once, at the global section."""
    twin = copy.deepcopy(node)
    stack = [twin]
    while stack:
        n = stack.pop()
        n.inherited = True
        if isinstance(n.value, dict):
            stack.extend(n.value.values())
        elif isinstance(n.value, list):
            stack.extend(n.value)
    return twin


def merge(base: Node, override: Node) -> Node:
    """`override` merged over `base`: mappings key by key, anything else replaced."""
    if not (isinstance(base.value, dict) and isinstance(override.value, dict)):
        return override
    merged = dict(base.value)
    for key, value in override.value.items():
        merged[key] = merge(merged[key], value) if key in merged else value
    return Node(merged, override.line, override.env, override.inherited)
