"""The pure part of building on a partitioned table: per-partition names and the order of the statements."""

from __future__ import annotations

import pytest

from indexd.errors import BuildError
from indexd.lifecycle.partitioned import PARTITION_PREFIX, TreeNode, partition_index_name, plan_steps

TREE = [
    TreeNode(1, "s", "payments", "p", None),
    TreeNode(2, "s", "payments_us", "r", 1),
    TreeNode(3, "s", "payments_asia", "p", 1),
    TreeNode(4, "s", "payments_asia_2", "r", 3),
    TreeNode(5, "s", "payments_asia_1", "r", 3),
]


def test_names_are_deterministic_distinct_and_fit_63_bytes() -> None:
    long_name = "Zahlungen_ü" * 20
    name = partition_index_name("indexd_payments_a_1234abcd", "s", long_name)
    assert name == partition_index_name("indexd_payments_a_1234abcd", "s", long_name)
    assert name.startswith(PARTITION_PREFIX) and len(name.encode()) <= 63 and name.isascii()
    assert name != partition_index_name("indexd_payments_b_9876fedc", "s", long_name)
    assert name != partition_index_name("indexd_payments_a_1234abcd", "t", long_name)


def test_plan_builds_depth_first_and_attaches_each_level() -> None:
    steps = plan_steps(TREE, "ix")
    kinds = [(s.kind, s.table) for s in steps]
    assert kinds == [
        ("create_only", "payments"),
        ("create_only", "payments_asia"),
        ("create_concurrently", "payments_asia_1"),
        ("attach", "payments_asia_1"),
        ("create_concurrently", "payments_asia_2"),
        ("attach", "payments_asia_2"),
        ("attach", "payments_asia"),
        ("create_concurrently", "payments_us"),
        ("attach", "payments_us"),
    ]
    asia = steps[1].index
    assert steps[3].parent == ("s", asia) and steps[6].parent == ("s", "ix") and steps[0].index == "ix"


def test_a_foreign_partition_is_refused_before_anything_runs() -> None:
    with pytest.raises(BuildError, match="foreign table"):
        plan_steps([*TREE, TreeNode(6, "s", "payments_remote", "f", 1)], "ix")


def test_a_plain_table_is_not_a_partition_tree() -> None:
    with pytest.raises(BuildError):
        plan_steps([TreeNode(1, "s", "t", "r", None)], "ix")
