"""Public corpora through pg_stat_statements: every normalized statement is costed, or skipped for a named reason
that is the statement's own, never because the planner refused the text indexd gave it.

TPC-H's 22 and TPC-DS's 99 queries come from duckdb's tpch/tpcds extensions, pgbench's scripts from pgbench
itself; see bench/workloads/corpus.py. PostgreSQL accepts every one of them as duckdb writes them, so no
statement is excluded (REJECTED_BY_POSTGRESQL stays empty; a new duckdb version that changes this shows here).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench.workloads.corpus import ACCEPTED_SKIPS, CORPORA, Corpus, Judgement, build, judge, unaccepted
from indexd.embedded import EmbeddedCluster

REJECTED_BY_POSTGRESQL: dict[str, str] = {}  # statement -> why PostgreSQL refuses it as written


@pytest.fixture(scope="module")
def judged(pg_cluster: EmbeddedCluster) -> Iterator[dict[str, tuple[Corpus, Judgement]]]:
    done: dict[str, tuple[Corpus, Judgement]] = {}
    try:
        for name in CORPORA:
            corpus = build(pg_cluster, name)
            done[name] = (corpus, judge(pg_cluster, corpus))
        yield done
    finally:
        for corpus, _ in done.values():
            pg_cluster.drop_database(corpus.dbname)


@pytest.mark.parametrize("name", CORPORA)
def test_every_normalized_statement_is_costed_or_skipped_for_its_own_reason(
        judged: dict[str, tuple[Corpus, Judgement]], name: str) -> None:
    corpus, result = judged[name]
    assert set(corpus.rejected) <= set(REJECTED_BY_POSTGRESQL), corpus.rejected
    assert result.not_planned == [], f"{name}: what-if could not cost {result.not_planned}"
    assert result.explainable == result.planned
    assert result.advice is not None
    bad = [s for s in result.advice.skipped if s.kind not in ACCEPTED_SKIPS]
    assert not bad and not unaccepted(result), [(s.kind, s.reason, s.query[:200]) for s in bad]
    assert result.costed + sum(result.skipped.values()) == result.statements


def test_the_corpora_hold_what_normalization_produces(judged: dict[str, tuple[Corpus, Judgement]]) -> None:
    texts = {name: [s.query for s in corpus.statements] for name, (corpus, _) in judged.items()}
    assert len([t for t in texts["tpch"] if "$" in t]) >= 20
    assert len([t for t in texts["tpcds"] if "$" in t]) >= 95
    everything = "\n".join(t for ts in texts.values() for t in ts)
    for construct in ("interval $", "date $", "timestamp $", "extract($", "BETWEEN $1 AND $2 + $3",
                      "make_interval(days => $", "LIMIT $", "OFFSET $", "IN ($", "ANY($", "OVER ("):
        assert construct in everything, construct
    _, tpcds = judged["tpcds"]
    assert tpcds.costed == 99  # every query of TPC-DS reaches the what-if stage


def test_pgbench_skips_are_the_statements_own(judged: dict[str, tuple[Corpus, Judgement]]) -> None:
    _, result = judged["pgbench"]
    assert result.skipped.get("transaction_control") == 2  # BEGIN, END
    assert "uncostable" not in result.skipped and "invalid_statement" not in result.skipped
    assert result.recommendations >= 1  # bid = $1 ORDER BY abalance DESC LIMIT $2
