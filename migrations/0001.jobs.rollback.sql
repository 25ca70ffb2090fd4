DROP TABLE IF EXISTS taskflow_idempotency_keys;
DROP TABLE IF EXISTS taskflow_dead_messages;
DROP TABLE IF EXISTS taskflow_jobs;
