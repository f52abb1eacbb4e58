-- indexd state schema, version 1. Runs with search_path set to the state schema, inside one transaction.

CREATE TABLE schema_version (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per capture of pg_stat_statements.
CREATE TABLE snapshots (
    id           bigserial PRIMARY KEY,
    taken_at     timestamptz NOT NULL DEFAULT now(),
    stats_reset  timestamptz,            -- pg_stat_statements_info.stats_reset: a change means counters restarted
    dealloc      bigint,                 -- pg_stat_statements_info.dealloc: entries evicted so far
    statements   integer NOT NULL DEFAULT 0
);
CREATE INDEX snapshots_taken_at ON snapshots (taken_at);

-- The cumulative counters of each statement at each snapshot.
CREATE TABLE statement_snapshots (
    snapshot_id      bigint NOT NULL REFERENCES snapshots (id) ON DELETE CASCADE,
    queryid          bigint NOT NULL,
    userid           oid NOT NULL,
    toplevel         boolean NOT NULL DEFAULT true,
    query            text NOT NULL,
    calls            bigint NOT NULL,
    total_exec_time  double precision NOT NULL,   -- milliseconds
    mean_exec_time   double precision NOT NULL,
    rows             bigint NOT NULL,
    shared_blks_hit  bigint NOT NULL,
    shared_blks_read bigint NOT NULL,
    PRIMARY KEY (snapshot_id, queryid, userid, toplevel)
);
CREATE INDEX statement_snapshots_queryid ON statement_snapshots (queryid);

CREATE TABLE recommendations (
    id                    bigserial PRIMARY KEY,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    status                text NOT NULL DEFAULT 'pending' CHECK (status IN
                          ('pending', 'approved', 'rejected', 'building', 'built', 'failed',
                           'kept', 'reverted', 'superseded')),
    fingerprint           text NOT NULL,          -- table + columns + method + where + include, for de-duplication
    table_schema          text NOT NULL,
    table_name            text NOT NULL,
    columns               jsonb NOT NULL,         -- ["a", "lower(b)", "c DESC"]
    method                text NOT NULL DEFAULT 'btree',
    where_clause          text,
    include               jsonb NOT NULL DEFAULT '[]',
    index_name            text NOT NULL,
    create_sql            text NOT NULL,
    estimated_size_bytes  bigint,
    improvement_pct       double precision,
    write_overhead        double precision,
    queries               jsonb NOT NULL DEFAULT '[]',
    decided_by            text,
    decided_at            timestamptz,
    reason                text
);
-- At most one live recommendation per index shape.
CREATE UNIQUE INDEX recommendations_live_fingerprint ON recommendations (fingerprint)
    WHERE status IN ('pending', 'approved', 'building', 'built', 'kept');
CREATE INDEX recommendations_status ON recommendations (status);

-- The audit log: every mutation (and every pause/resume/decision) is written before (intent) and after (outcome).
CREATE TABLE mutation_log (
    id                 bigserial PRIMARY KEY,
    at                 timestamptz NOT NULL DEFAULT now(),
    actor              text NOT NULL,          -- user@host pid
    action             text NOT NULL,          -- create_index, drop_index, revert_index, pause, resume, approve, reject
    phase              text NOT NULL CHECK (phase IN ('intent', 'outcome')),
    intent_id          bigint REFERENCES mutation_log (id) ON DELETE SET NULL,
    target             text,                   -- schema.table / index name / backup id
    sql                text,
    reason             text,
    before             jsonb,
    after              jsonb,
    outcome            text CHECK (outcome IN ('started', 'succeeded', 'failed', 'refused', 'skipped')),
    duration_s         double precision,
    recommendation_id  bigint,
    job_id             text
);
CREATE INDEX mutation_log_at ON mutation_log (at);
CREATE INDEX mutation_log_action_at ON mutation_log (action, at);

CREATE TABLE index_verdicts (
    id                 bigserial PRIMARY KEY,
    decided_at         timestamptz NOT NULL DEFAULT now(),
    recommendation_id  bigint,
    index_schema       text NOT NULL,
    index_name         text NOT NULL,
    verdict            text NOT NULL CHECK (verdict IN ('kept', 'reverted', 'inconclusive')),
    evidence           jsonb NOT NULL
);

-- Catalog of backups. The manifest files beside the dumps are the source of truth; this mirrors them.
CREATE TABLE backups (
    id               text PRIMARY KEY,
    database         text NOT NULL,
    started_at       timestamptz NOT NULL,
    finished_at      timestamptz,
    status           text NOT NULL CHECK (status IN ('running', 'completed', 'verified', 'failed', 'deleted')),
    format           text NOT NULL,
    path             text NOT NULL,
    size_bytes       bigint,
    sha256           text,
    verified_at      timestamptz,
    error            text,
    manifest         jsonb
);
CREATE INDEX backups_database_started ON backups (database, started_at);

-- The emergency switch. A pause is active while resumed_at is null and until is null or in the future.
CREATE TABLE pause (
    id          bigserial PRIMARY KEY,
    paused_at   timestamptz NOT NULL DEFAULT now(),
    until       timestamptz,
    reason      text NOT NULL DEFAULT '',
    paused_by   text NOT NULL,
    resumed_at  timestamptz,
    resumed_by  text
);

-- One row per scheduled job run (status, metrics history); pruned by retention.metrics.
CREATE TABLE job_runs (
    id           bigserial PRIMARY KEY,
    job          text NOT NULL,
    job_id       text NOT NULL,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz,
    outcome      text CHECK (outcome IN ('ok', 'failed', 'skipped')),
    message      text
);
CREATE INDEX job_runs_job_started ON job_runs (job, started_at);
