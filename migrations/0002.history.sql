-- Attempt history and replay lineage on the job row, and the dead-letter listing's index.
-- depends: 0001.jobs

-- Every finished attempt, oldest first: {number, series, worker, started_at, finished_at,
-- outcome, error}. Appended by the statement that records the outcome (no extra round trip).
ALTER TABLE taskflow_jobs ADD COLUMN history jsonb NOT NULL DEFAULT '[]'::jsonb;
-- Every replay of a dead letter: {at, by, reason, payload_changed}.
ALTER TABLE taskflow_jobs ADD COLUMN replays jsonb NOT NULL DEFAULT '[]'::jsonb;
-- The payload as first submitted, once a replay replaced it.
ALTER TABLE taskflow_jobs ADD COLUMN original_payload jsonb;

-- GET /dlq: dead letters, newest first by when they died (keyset cursor on finished_at, id).
CREATE INDEX taskflow_jobs_dead ON taskflow_jobs (finished_at DESC, id DESC) WHERE status = 'failed';

-- The history entry of the attempt that row ``j`` (as it was before the update) is running.
CREATE FUNCTION taskflow_attempt(j taskflow_jobs, outcome text, at timestamptz, error jsonb)
RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_array(jsonb_build_object(
        'number', j.attempts, 'series', j.replay_count, 'worker', j.lease_owner,
        'started_at', extract(epoch FROM j.started_at), 'finished_at', extract(epoch FROM at),
        'outcome', outcome, 'error', error))
$$;
