-- Indexes that keep history pruning cheap.
-- Deleting old audit intents sets intent_id to NULL in their outcomes (ON DELETE SET NULL): without an index
-- on intent_id every deleted row would scan the whole audit log.
CREATE INDEX mutation_log_intent_id ON mutation_log (intent_id) WHERE intent_id IS NOT NULL;
-- job_runs is pruned by age alone; its (job, started_at) index cannot serve that.
CREATE INDEX job_runs_started_at ON job_runs (started_at);
