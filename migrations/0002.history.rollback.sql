DROP FUNCTION IF EXISTS taskflow_attempt(taskflow_jobs, text, timestamptz, jsonb);
DROP INDEX IF EXISTS taskflow_jobs_dead;
ALTER TABLE taskflow_jobs DROP COLUMN IF EXISTS original_payload;
ALTER TABLE taskflow_jobs DROP COLUMN IF EXISTS replays;
ALTER TABLE taskflow_jobs DROP COLUMN IF EXISTS history;
