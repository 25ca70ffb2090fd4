-- Every SQL statement of PostgresJobStore, by name. Loaded once by taskflow.postgres.sql.
-- Parameters are psycopg named placeholders. Every state change carries its guard:
-- `status = ANY(%(sources)s)` (from taskflow.jobs.sources) and the attempt number as a fence.

-- name: insert_jobs
-- One JSON array of rows, not one array parameter per column: the driver dumps a list
-- element by element in Python, the server parses JSON in C (a batch of 1,000 in one go).
INSERT INTO taskflow_jobs (id, task, queue, payload, status, priority, max_attempts, timeout,
                           run_at, idempotency_key, created_at, updated_at)
SELECT j.id, j.task, j.queue, j.payload, j.status, j.priority, j.max_attempts, j.timeout,
       j.run_at, %(key)s, j.created_at, j.created_at
FROM jsonb_to_recordset(%(rows)s::jsonb)
     AS j(id uuid, task text, queue text, payload jsonb, status text, priority smallint,
          max_attempts integer, timeout double precision, run_at timestamptz,
          created_at timestamptz)

-- name: claim_key
INSERT INTO taskflow_idempotency_keys (key, request_hash, job_ids, created_at, expires_at)
VALUES (%(key)s, %(hash)s, %(ids)s::uuid[], %(now)s, %(expires_at)s)
ON CONFLICT (key) DO UPDATE
    SET request_hash = EXCLUDED.request_hash, job_ids = EXCLUDED.job_ids,
        created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at
    WHERE taskflow_idempotency_keys.expires_at IS NOT NULL
      AND taskflow_idempotency_keys.expires_at <= %(now)s
RETURNING key

-- name: get_key
SELECT request_hash, job_ids::text[] AS job_ids FROM taskflow_idempotency_keys WHERE key = %(key)s

-- name: claim
UPDATE taskflow_jobs
SET status = 'in_progress', attempts = attempts + 1, lease_owner = %(owner)s,
    lease_expires_at = %(lease_until)s, started_at = %(now)s, updated_at = %(now)s,
    progress = 0, progress_message = NULL
WHERE id = ANY(%(ids)s::uuid[]) AND status = ANY(%(sources)s)
RETURNING *

-- name: complete
UPDATE taskflow_jobs AS j
SET status = 'completed', result = c.result::jsonb, error = NULL, progress = 100,
    history = j.history || taskflow_attempt(j, 'completed', %(now)s, NULL),
    finished_at = %(now)s, updated_at = %(now)s, lease_owner = NULL, lease_expires_at = NULL
FROM unnest(%(ids)s::uuid[], %(attempts)s::integer[], %(results)s::text[]) AS c(id, attempt, result)
WHERE j.id = c.id AND j.attempts = c.attempt AND j.status = ANY(%(sources)s)
RETURNING j.*

-- name: reschedule
UPDATE taskflow_jobs AS j
SET status = 'scheduled', run_at = c.run_at, error = c.error::jsonb, updated_at = %(now)s,
    history = j.history || taskflow_attempt(j, 'retried', %(now)s, c.error::jsonb),
    lease_owner = NULL, lease_expires_at = NULL
FROM unnest(%(ids)s::uuid[], %(attempts)s::integer[], %(run_ats)s::timestamptz[],
            %(errors)s::text[]) AS c(id, attempt, run_at, error)
WHERE j.id = c.id AND j.attempts = c.attempt AND j.status = ANY(%(sources)s)
RETURNING j.*

-- name: bury
UPDATE taskflow_jobs AS j
SET status = 'failed', error = c.error::jsonb, finished_at = %(now)s, updated_at = %(now)s,
    history = j.history || taskflow_attempt(j, 'dead_lettered', %(now)s, c.error::jsonb),
    lease_owner = NULL, lease_expires_at = NULL
FROM unnest(%(ids)s::uuid[], %(attempts)s::integer[], %(errors)s::text[]) AS c(id, attempt, error)
WHERE j.id = c.id AND j.attempts = c.attempt AND j.status = ANY(%(sources)s)
RETURNING j.*

-- name: mark_cancelled
UPDATE taskflow_jobs AS j
SET status = 'cancelled', finished_at = %(now)s, updated_at = %(now)s,
    history = j.history || taskflow_attempt(j, 'cancelled', %(now)s, NULL),
    lease_owner = NULL, lease_expires_at = NULL
FROM unnest(%(ids)s::uuid[], %(attempts)s::integer[]) AS c(id, attempt)
WHERE j.id = c.id AND j.attempts = c.attempt AND j.status = ANY(%(sources)s)
RETURNING j.*

-- name: release
UPDATE taskflow_jobs AS j
SET status = 'pending', attempts = j.attempts - 1, published = false, updated_at = %(now)s,
    history = j.history || taskflow_attempt(j, 'released', %(now)s, NULL),
    lease_owner = NULL, lease_expires_at = NULL
FROM unnest(%(ids)s::uuid[], %(attempts)s::integer[]) AS c(id, attempt)
WHERE j.id = c.id AND j.attempts = c.attempt AND j.status = ANY(%(sources)s)
RETURNING j.*

-- name: progress
UPDATE taskflow_jobs AS j
SET progress = c.percent, progress_message = c.message, updated_at = %(now)s
FROM unnest(%(ids)s::uuid[], %(attempts)s::integer[], %(percents)s::real[], %(messages)s::text[])
     AS c(id, attempt, percent, message)
WHERE j.id = c.id AND j.attempts = c.attempt AND j.status = 'in_progress'
RETURNING j.*

-- name: renew
UPDATE taskflow_jobs AS j
SET lease_expires_at = c.until, updated_at = %(now)s
FROM unnest(%(ids)s::uuid[], %(attempts)s::integer[], %(untils)s::timestamptz[])
     AS c(id, attempt, until)
WHERE j.id = c.id AND j.attempts = c.attempt AND j.status = 'in_progress'
RETURNING j.*

-- name: promote_due
UPDATE taskflow_jobs
SET status = 'pending', published = false, updated_at = %(now)s
WHERE id IN (SELECT id FROM taskflow_jobs
             WHERE status = 'scheduled' AND run_at <= %(now)s
             ORDER BY run_at, created_at
             LIMIT %(limit)s
             FOR UPDATE SKIP LOCKED)
RETURNING *

-- name: lock_job
SELECT * FROM taskflow_jobs WHERE id = %(id)s FOR UPDATE

-- name: cancel_now
UPDATE taskflow_jobs SET status = 'cancelled', finished_at = %(now)s, updated_at = %(now)s
WHERE id = %(id)s RETURNING *

-- name: request_cancel
UPDATE taskflow_jobs SET cancel_requested = true, updated_at = %(now)s
WHERE id = %(id)s RETURNING *

-- name: replay
-- On the right of SET, columns are the old row's: original_payload keeps the first payload.
UPDATE taskflow_jobs
SET status = 'pending', attempts = 0, replay_count = replay_count + 1, published = false,
    cancel_requested = false,
    original_error = COALESCE(original_error, error), error = NULL, result = NULL,
    finished_at = NULL, run_at = NULL, updated_at = %(now)s,
    original_payload = CASE WHEN %(payload)s::jsonb IS NOT NULL
                                 AND %(payload)s::jsonb IS DISTINCT FROM payload
                            THEN COALESCE(original_payload, payload) ELSE original_payload END,
    payload = COALESCE(%(payload)s::jsonb, payload),
    replays = replays || jsonb_build_array(jsonb_build_object(
        'at', extract(epoch FROM %(now)s::timestamptz), 'by', %(by)s::text,
        'reason', %(reason)s::text,
        'payload_changed', COALESCE(%(payload)s::jsonb <> payload, false)))
WHERE id = ANY(%(ids)s::uuid[]) AND status = ANY(%(sources)s)
RETURNING *

-- name: recover_expired
-- Leases that expired, and (at start-up) those held by owners known to be gone.
WITH expired AS (
    SELECT id FROM taskflow_jobs
    WHERE status = 'in_progress'
      AND (lease_expires_at < %(now)s OR lease_owner = ANY(%(owners)s::text[]))
    ORDER BY lease_expires_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE taskflow_jobs AS j
SET status = CASE WHEN j.attempts >= j.max_attempts THEN 'failed' ELSE 'pending' END,
    error = CASE WHEN j.attempts >= j.max_attempts
                 THEN %(error)s::jsonb || '{"reason": "max_attempts_exceeded"}'::jsonb
                 ELSE %(error)s::jsonb END,
    published = false,
    history = j.history || taskflow_attempt(j, 'worker_lost', %(now)s, %(error)s::jsonb),
    finished_at = CASE WHEN j.attempts >= j.max_attempts THEN %(now)s ELSE NULL END,
    lease_owner = NULL, lease_expires_at = NULL, updated_at = %(now)s
FROM expired
WHERE j.id = expired.id
RETURNING j.*

-- name: mark_published
-- SKIP LOCKED: a row locked by a claim is being delivered already; marking it is moot, and
-- waiting for it could deadlock against the claim's own lock order.
UPDATE taskflow_jobs SET published = true
WHERE id IN (SELECT id FROM taskflow_jobs
             WHERE id = ANY(%(ids)s::uuid[]) AND status = 'pending'
             FOR UPDATE SKIP LOCKED)

-- name: unpublished
-- Touch what it returns, so the sweeper of another process skips these rows (SKIP LOCKED
-- while this one publishes, then the new updated_at keeps them out of its window).
UPDATE taskflow_jobs SET updated_at = %(now)s
WHERE id IN (SELECT id FROM taskflow_jobs
             WHERE status = 'pending' AND NOT published AND updated_at < %(before)s
             ORDER BY updated_at
             LIMIT %(limit)s
             FOR UPDATE SKIP LOCKED)
RETURNING *

-- name: purge_jobs
DELETE FROM taskflow_jobs
WHERE id IN (SELECT id FROM taskflow_jobs
             WHERE (status IN ('completed', 'cancelled') AND finished_at < %(completed_before)s)
                OR (status = 'failed' AND finished_at < %(failed_before)s)
             LIMIT %(limit)s
             FOR UPDATE SKIP LOCKED)
RETURNING id::text

-- name: purge_keys
DELETE FROM taskflow_idempotency_keys
WHERE key IN (SELECT key FROM taskflow_idempotency_keys
              WHERE expires_at < %(now)s LIMIT %(limit)s FOR UPDATE SKIP LOCKED)

-- name: get
SELECT * FROM taskflow_jobs WHERE id = %(id)s

-- name: counts
SELECT status, count(*) AS n FROM taskflow_jobs GROUP BY status

-- name: count_status
SELECT count(*) AS n FROM (SELECT 1 FROM taskflow_jobs WHERE status = %(status)s LIMIT %(limit)s) s

-- name: next_run_at
SELECT min(run_at) AS run_at FROM taskflow_jobs WHERE status = 'scheduled'

-- name: check
SELECT 1

-- name: list_jobs
SELECT * FROM taskflow_jobs
WHERE (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(task)s::text IS NULL OR task = %(task)s::text)
  AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
  AND (%(before_at)s::timestamptz IS NULL
       OR (created_at, id) < (%(before_at)s::timestamptz, %(before_id)s::uuid))
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s OFFSET %(offset)s

-- name: record_dead_messages
INSERT INTO taskflow_dead_messages (queue, body, reason, created_at)
SELECT * FROM unnest(%(queues)s::text[], %(bodies)s::text[], %(reasons)s::text[],
                     %(ats)s::timestamptz[])

-- name: dead_messages
SELECT id, queue, body, reason, created_at FROM taskflow_dead_messages
ORDER BY id DESC LIMIT %(limit)s OFFSET %(offset)s

-- name: dead_letter_filter
status = 'failed'
  AND (%(task)s::text IS NULL OR task = %(task)s::text)
  AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
  AND (%(code)s::text IS NULL OR error->>'code' = %(code)s::text)
  AND (%(since)s::timestamptz IS NULL OR finished_at >= %(since)s::timestamptz)
  AND (%(until)s::timestamptz IS NULL OR finished_at < %(until)s::timestamptz)
  AND (%(q)s::text IS NULL OR id::text = %(q_exact)s::text
       OR strpos(lower(error->>'message'), %(q)s::text) > 0
       OR strpos(lower(error->>'type'), %(q)s::text) > 0
       OR strpos(lower(payload::text), %(q)s::text) > 0)

-- name: dead_letters
SELECT * FROM taskflow_jobs
WHERE /*include:dead_letter_filter*/
  AND (%(before_at)s::timestamptz IS NULL
       OR (finished_at, id) < (%(before_at)s::timestamptz, %(before_id)s::uuid))
ORDER BY finished_at DESC, id DESC
LIMIT %(limit)s OFFSET %(offset)s

-- name: count_dead_letters
SELECT count(*) AS n FROM taskflow_jobs WHERE /*include:dead_letter_filter*/

-- name: purge_dead_letters
DELETE FROM taskflow_jobs
WHERE id IN (SELECT id FROM taskflow_jobs WHERE /*include:dead_letter_filter*/
             LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
RETURNING id::text

-- name: create_key
INSERT INTO taskflow_api_keys (name, key_hash, scopes) VALUES (%(name)s, %(hash)s, %(scopes)s)
RETURNING name, scopes, extract(epoch FROM created_at) AS created_at, NULL::float8 AS revoked_at

-- name: find_key
SELECT name, scopes, extract(epoch FROM created_at) AS created_at,
       extract(epoch FROM revoked_at) AS revoked_at
FROM taskflow_api_keys WHERE key_hash = %(hash)s

-- name: list_keys
SELECT name, scopes, extract(epoch FROM created_at) AS created_at,
       extract(epoch FROM revoked_at) AS revoked_at
FROM taskflow_api_keys WHERE revoked_at IS NULL OR %(revoked)s
ORDER BY revoked_at IS NOT NULL, name, created_at

-- name: revoke_key
UPDATE taskflow_api_keys SET revoked_at = %(now)s WHERE name = %(name)s AND revoked_at IS NULL
RETURNING name, scopes, extract(epoch FROM created_at) AS created_at,
          extract(epoch FROM revoked_at) AS revoked_at
