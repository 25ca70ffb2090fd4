-- The jobs table, idempotency keys, and the indexes for every listing and sweep query.
-- depends:

CREATE TABLE taskflow_jobs (
    id               uuid PRIMARY KEY,
    task             text NOT NULL,
    queue            text NOT NULL,
    payload          jsonb NOT NULL,
    status           text NOT NULL CHECK (status IN
                        ('pending', 'scheduled', 'in_progress', 'completed', 'failed', 'cancelled')),
    priority         smallint NOT NULL DEFAULT 0 CHECK (priority BETWEEN 0 AND 9),
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts     integer NOT NULL CHECK (max_attempts >= 1),
    timeout          double precision CHECK (timeout IS NULL OR timeout > 0),
    run_at           timestamptz,
    lease_owner      text,
    lease_expires_at timestamptz,
    result           jsonb,
    error            jsonb,
    progress         real NOT NULL DEFAULT 0,
    progress_message text,
    idempotency_key  text,
    cancel_requested boolean NOT NULL DEFAULT false,
    published        boolean NOT NULL DEFAULT false,
    replay_count     integer NOT NULL DEFAULT 0,
    original_error   jsonb,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    started_at       timestamptz,
    finished_at      timestamptz
);

-- GET /jobs: newest first, unfiltered and by each filter (keyset cursor on created_at, id).
CREATE INDEX taskflow_jobs_created ON taskflow_jobs (created_at DESC, id DESC);
CREATE INDEX taskflow_jobs_status_created ON taskflow_jobs (status, created_at DESC, id DESC);
CREATE INDEX taskflow_jobs_task_created ON taskflow_jobs (task, created_at DESC, id DESC);
CREATE INDEX taskflow_jobs_queue_created ON taskflow_jobs (queue, created_at DESC, id DESC);
-- Promotion of due scheduled jobs, and next_run_at.
CREATE INDEX taskflow_jobs_due ON taskflow_jobs (run_at) WHERE status = 'scheduled';
-- The reaper's lease sweep.
CREATE INDEX taskflow_jobs_leases ON taskflow_jobs (lease_expires_at) WHERE status = 'in_progress';
-- The outbox sweep: pending jobs whose publish was never confirmed.
CREATE INDEX taskflow_jobs_unpublished ON taskflow_jobs (updated_at)
    WHERE status = 'pending' AND NOT published;
-- Retention purge of terminal jobs.
CREATE INDEX taskflow_jobs_finished ON taskflow_jobs (finished_at)
    WHERE status IN ('completed', 'failed', 'cancelled');

-- Transport messages that named no job we could run (undecodable, unknown job), with why.
CREATE TABLE taskflow_dead_messages (
    id         bigserial PRIMARY KEY,
    queue      text NOT NULL,
    body       text NOT NULL,
    reason     text NOT NULL,
    created_at timestamptz NOT NULL
);

CREATE TABLE taskflow_idempotency_keys (
    key          text PRIMARY KEY,
    request_hash text,
    job_ids      uuid[] NOT NULL,
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz
);
CREATE INDEX taskflow_idempotency_keys_expiry ON taskflow_idempotency_keys (expires_at);
