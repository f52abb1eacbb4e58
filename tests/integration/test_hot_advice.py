"""The write model on a real server: an index on a column a frequent UPDATE sets costs the lost HOT updates, one
on a column it leaves alone does not; the HOT share comes from pg_stat_user_tables."""

from __future__ import annotations

import psycopg2.extensions

from indexd.advisor.pipeline import advise
from indexd.config.schema import IndexingSettings
from indexd.db.pool import Database
from indexd.statements.statement import Statement
from indexd.workload.lookback import given_workload

SETTINGS = IndexingSettings(min_calls=1)


def test_an_index_on_a_heartbeat_column_is_declined_for_its_lost_hot_updates(
        database: Database, pg_conn: psycopg2.extensions.connection) -> None:
    with pg_conn.cursor() as cur:
        cur.execute("CREATE TABLE accounts (aid int PRIMARY KEY, bid int NOT NULL, abalance int NOT NULL,"
                    " filler char(84), mtime timestamptz NOT NULL DEFAULT now()) WITH (fillfactor = 90)")
        cur.execute("INSERT INTO accounts (aid, bid, abalance, filler, mtime) SELECT g, g % 1000, 0, '', "
                    "now() - g * interval '1 second' FROM generate_series(1, 100000) g")
        cur.execute("VACUUM ANALYZE accounts")
        cur.execute("UPDATE accounts SET abalance = abalance + 1, mtime = now() WHERE aid % 40 = 0")
        cur.execute("SELECT pg_stat_force_next_flush()")
        cur.execute("SELECT 1")
        cur.execute("SELECT n_tup_hot_upd > 0 FROM pg_stat_user_tables WHERE relname = 'accounts'")
        assert cur.fetchone()[0], "no HOT update counted"
    statements = [
        Statement("UPDATE accounts SET abalance = abalance + $1, mtime = now() WHERE aid = $2", calls=10_000_000),
        Statement("SELECT aid, abalance FROM accounts WHERE mtime > $1 ORDER BY mtime LIMIT 10", calls=1000),
        Statement("SELECT aid, abalance FROM accounts WHERE bid = $1", calls=1000),
    ]
    advice = advise(database, SETTINGS, given_workload(statements, SETTINGS))
    recommended = {tuple(k.column for k in r.candidate.keys) for r in advice.recommendations}
    assert ("bid",) in recommended
    assert not any("mtime" in keys for keys in recommended), recommended
    why = {d.query: d.reason for d in advice.declined}
    assert "no longer be HOT" in why["public.accounts (mtime)"], why
    bid = next(r for r in advice.recommendations if r.candidate.keys[0].column == "bid")
    assert bid.write_overhead < 0.001  # every update so far was HOT, and stays HOT next to an index on bid
