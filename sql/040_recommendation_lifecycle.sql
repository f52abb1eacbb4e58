-- The recommendation lifecycle as an explicit state machine (indexd/state/recommendations.py: Status, LIVE and
-- TRANSITIONS). The status list and the live list below are the same lists as there; a test compares them.
--
-- interrupted: the build's run was interrupted (connection lost, server restart, indexd stopped); the
--              recommendation is buildable again, `attempts` counts the interruptions up to
--              indexing.build_attempts, then it becomes failed.
-- origin:      'workload' (pg_stat_statements) or 'queries' (offline advice from a query file: never built
--              without an explicit `indexd approve`).

ALTER TABLE recommendations
    DROP CONSTRAINT recommendations_status_check,
    ADD CONSTRAINT recommendations_status_check CHECK (status IN
        ('pending', 'approved', 'rejected', 'building', 'built', 'kept', 'reverted', 'failed', 'interrupted',
         'superseded')),
    ADD COLUMN attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    ADD COLUMN origin text NOT NULL DEFAULT 'workload' CHECK (origin IN ('workload', 'queries'));

-- An interrupted recommendation is still live: it goes back to the queue, so new advice for the same index
-- refreshes it instead of adding a second row that could be built beside it.
DROP INDEX recommendations_live_fingerprint;
CREATE UNIQUE INDEX recommendations_live_fingerprint ON recommendations (fingerprint)
    WHERE status IN ('pending', 'approved', 'building', 'built', 'kept', 'interrupted');
