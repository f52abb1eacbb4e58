-- A backup's two facts, kept apart: `verified_at` is when its checksum (and table of contents) last matched;
-- the test restore into a scratch database is a fact of its own, with its result:
--
-- ok:          restored (apart from what the role may not create, listed in the manifest) and the row counts match;
-- incomplete:  restored and compared, but some objects could not be created on the restore server (listed);
-- failed:      a data problem (the dump unreadable, rows failing to load, a row count that differs): the backup
--              is marked failed;
-- error:       the test could not run or finish there (no CREATEDB, the disk, the connection): the backup keeps
--              its status.

ALTER TABLE backups
    ADD COLUMN test_restore_at     timestamptz,
    ADD COLUMN test_restore_result text CHECK (test_restore_result IN ('ok', 'incomplete', 'failed', 'error')),
    ADD COLUMN test_restore_detail text;
