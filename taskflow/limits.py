"""Every bound the server enforces and every default it starts from, defined once.

Request parsing (``web/parsing.py``), the OpenAPI document (``web/schemas.py``), ingest (the
Python API), the task registry and the RabbitMQ topology all read these names, so the
bounds a client is told are the bounds it meets. ``Settings`` defaults come from here, and
``TreeConfig.from_settings`` carries them to the actors.
"""

from __future__ import annotations

# ---------------------------------------------------------------- bounds

MIN_PRIORITY = 0
MAX_PRIORITY = 9
"""Job priorities (higher runs first); also the RabbitMQ queues' ``x-max-priority``."""
MAX_ATTEMPTS = 100
MAX_DELAY_SECONDS = 366 * 86400.0
MAX_TIMEOUT_SECONDS = 7 * 86400.0
MAX_NAME = 200
"""Longest task type or queue name."""
MAX_IDEMPOTENCY_KEY = 255
MAX_DEPTH = 64
"""Deepest nesting of objects/arrays in a payload."""
MAX_INT_BITS = 14_000
"""Largest integer in a payload (about 4,200 digits: Python's int-to-text limit is 4,300)."""
MAX_PAGE = 500
DEFAULT_PAGE = 10
MAX_OFFSET = 1_000_000

MAX_WAIT_SECONDS = 60
"""Longest long-poll of ``GET /api/v1/jobs/{id}?wait=S``."""
MAX_REQUEST_ID = 128

# ---------------------------------------------------------------- defaults (Settings)

MAX_BATCH = 1000
"""Jobs per submission (``TASKFLOW_MAX_BATCH``)."""
MAX_BODY_BYTES = 1024 * 1024
"""Request body limit (``TASKFLOW_MAX_BODY_BYTES``)."""
CONCURRENCY = 128
"""Attempts run at once per worker (``TASKFLOW_CONCURRENCY``): async tasks on the loop,
``def`` tasks each in a thread of their own."""
LEASE_SECONDS = 15.0
"""Lease of a running attempt, renewed every third of it (``TASKFLOW_LEASE_SECONDS``)."""
SHUTDOWN_GRACE_SECONDS = 30.0
PROMOTE_INTERVAL_SECONDS = 1.0
REAPER_INTERVAL_SECONDS = 5.0
RETENTION_COMPLETED = 7 * 86400.0
RETENTION_FAILED = 30 * 86400.0
IDEMPOTENCY_TTL = 86400.0

MAX_LOG_BYTES = 20 * 1024 * 1024
"""Each job's log is cut at 20 MiB (``TASKFLOW_MAX_LOG_BYTES``)."""

RATE_LIMIT_SUBMIT = "5000/second"
"""Submissions per API key (or client address): a batch of up to MAX_BATCH jobs counts one."""
RATE_LIMIT_READ = "10000/second"
RATE_LIMIT_ADMIN = "100/second"
CACHE_TTL = 60.0
"""How long a terminal job's view stays cached (dropped when a change commits)."""
KEY_CACHE_SECONDS = 2.0
"""How long an API process trusts a key lookup: a revoked key stops working within this."""

STREAM_BUFFER = 1024
"""Events a live stream (SSE, WebSocket) may fall behind by; past it, events are dropped for
that stream and it is told how many."""
STREAM_KEEPALIVE = 15.0
"""Seconds of silence after which a live stream sends a keep-alive."""
