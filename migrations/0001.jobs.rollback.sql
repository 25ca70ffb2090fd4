DROP TABLE IF EXISTS taskflow_idempotency_keys;
DROP TABLE IF EXISTS taskflow_jobs;
