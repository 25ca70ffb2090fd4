"""Settings: one frozen dataclass, read from ``TASKFLOW_*`` environment variables."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from taskflow import limits
from taskflow.errors import ConfigError


class Secret(str):
    """A string whose ``repr`` hides the secret part (a URL's password, or all of it)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return repr(mask(str(self)))


def mask(value: str) -> str:
    try:
        parts = urlsplit(value)
        if parts.scheme and parts.netloc:
            if parts.password is None:
                return value
            host = parts.hostname or ""
            if parts.port:
                host = f"{host}:{parts.port}"
            user = parts.username or ""
            return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
    except ValueError:  # a malformed URL (bad port, bad IPv6 literal): hide all of it
        return "***"
    return "***" if value else ""


def _duration(text: str) -> float:
    """Seconds from ``30``, ``30s``, ``15m``, ``2h``, ``7d``."""
    text = text.strip().lower()
    units = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
    if text and text[-1] in units:
        return float(text[:-1]) * units[text[-1]]
    return float(text)


def _csv(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected a boolean, got {text!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Every setting, its ``TASKFLOW_`` variable and its default. See README "Configuration"."""

    home: Path = Path(".taskflow")
    database_url: Secret | None = None
    amqp_url: Secret | None = None
    amqp_prefix: str = "taskflow"
    amqp_quorum: bool = False
    redis_url: Secret | None = None
    s3_url: Secret | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    metrics_port: int | None = None
    """A port for this process's own Prometheus exposition (``worker --metrics-port``)."""
    dashboard_port: int = 5006
    """The Panel dashboard's port (``taskflow dashboard``, ``taskflow up --dashboard``)."""
    concurrency: int = limits.CONCURRENCY
    prefetch: int | None = None
    """Unacknowledged deliveries per queue a worker accepts; ``None``: the concurrency."""
    queues: tuple[str, ...] = ("default",)
    tasks: tuple[str, ...] = ()
    demo: bool | None = None
    """The built-in demo tasks (echo, sleep, fail, cpu): ``None`` means only in ``taskflow up``."""
    lease_seconds: float = limits.LEASE_SECONDS
    shutdown_grace_seconds: float = limits.SHUTDOWN_GRACE_SECONDS
    promote_interval_seconds: float = limits.PROMOTE_INTERVAL_SECONDS
    reaper_interval_seconds: float = limits.REAPER_INTERVAL_SECONDS
    retention_completed: float = limits.RETENTION_COMPLETED
    retention_failed: float = limits.RETENTION_FAILED
    idempotency_ttl: float = limits.IDEMPOTENCY_TTL
    max_batch: int = limits.MAX_BATCH
    max_body_bytes: int = limits.MAX_BODY_BYTES
    max_log_bytes: int = limits.MAX_LOG_BYTES
    """Each job's log is cut here (a truncation marker line ends it); 0 turns capture off."""
    auth: str = "off"
    """``required``: every route but health needs an API key; ``off`` binds loopback only."""
    trusted_proxies: tuple[str, ...] = ()
    """Addresses or networks whose ``X-Forwarded-For`` names the client (rate-limit keys)."""
    rate_limit_submit: str = limits.RATE_LIMIT_SUBMIT
    rate_limit_read: str = limits.RATE_LIMIT_READ
    rate_limit_admin: str = limits.RATE_LIMIT_ADMIN
    max_backlog: int | None = None
    """Pending jobs (cluster-wide) past which submissions get 429 ``backlog_full``."""
    cache_ttl: float = limits.CACHE_TTL
    stream_buffer: int = limits.STREAM_BUFFER
    """Events a live stream may fall behind by before some are dropped (and it is told)."""
    stream_keepalive: float = limits.STREAM_KEEPALIVE
    """Seconds of silence after which a live stream sends a keep-alive."""
    log_level: str = "info"
    log_json: bool = False
    extra: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read ``TASKFLOW_<FIELD>`` for every field; unset ones keep their defaults.

        Raises ``ConfigError`` naming the variable for a value that does not parse, or for
        an unknown ``TASKFLOW_*`` variable (a typo must not silently fall back to a default).
        """
        env = os.environ if environ is None else environ
        known = {f"TASKFLOW_{f.name.upper()}": f for f in fields(cls) if f.name != "extra"}
        values: dict[str, Any] = {}
        for var, f in known.items():
            if var not in env:
                continue
            raw = env[var]
            try:
                values[f.name] = _parse(f.name, raw)
            except ValueError as exc:
                raise ConfigError(f"{var}={mask(raw)!s} is invalid: {exc}", variable=var) from None
        unknown = sorted(k for k in env if k.startswith("TASKFLOW_") and k not in known)
        unknown = [
            k for k in unknown if not k.startswith(ALLOWED_OTHER_PREFIXES) and k not in CLIENT
        ]
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(unknown)}", variables=unknown)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.concurrency < 1:
            raise ConfigError("TASKFLOW_CONCURRENCY must be >= 1")
        if self.prefetch is not None and not 1 <= self.prefetch <= 65535:
            raise ConfigError("TASKFLOW_PREFETCH must be 1..65535 (unset: the concurrency)")
        if not 0 <= self.port < 65536:
            raise ConfigError("TASKFLOW_PORT must be 0..65535 (0: any free port)")
        if self.metrics_port is not None and not 0 <= self.metrics_port < 65536:
            raise ConfigError("TASKFLOW_METRICS_PORT must be 0..65535 (0: any free port)")
        if not 1 <= self.dashboard_port < 65536:
            raise ConfigError("TASKFLOW_DASHBOARD_PORT must be 1..65535")
        if self.max_log_bytes < 0:
            raise ConfigError("TASKFLOW_MAX_LOG_BYTES must be >= 0 (0: no job logs)")
        if self.auth not in ("required", "off"):
            raise ConfigError("TASKFLOW_AUTH must be `required` or `off`")
        if self.max_backlog is not None and self.max_backlog < 1:
            raise ConfigError("TASKFLOW_MAX_BACKLOG must be >= 1 (unset: no admission control)")
        if self.cache_ttl < 0:
            raise ConfigError("TASKFLOW_CACHE_TTL must be >= 0 (0: no cache)")
        if not 1 <= self.stream_buffer <= 1_000_000:
            raise ConfigError("TASKFLOW_STREAM_BUFFER must be 1..1000000")
        if not 0 < self.stream_keepalive <= 3600:
            raise ConfigError("TASKFLOW_STREAM_KEEPALIVE must be > 0 and <= 3600 seconds")
        for group in ("submit", "read", "admin"):
            try:
                parse_rate(getattr(self, f"rate_limit_{group}"))
            except ValueError as exc:
                raise ConfigError(
                    f"TASKFLOW_RATE_LIMIT_{group.upper()} is invalid: {exc}",
                    variable=f"TASKFLOW_RATE_LIMIT_{group.upper()}",
                ) from None
        try:
            networks(self.trusted_proxies)
        except ValueError as exc:
            raise ConfigError(f"TASKFLOW_TRUSTED_PROXIES is invalid: {exc}") from None
        if not self.queues:
            raise ConfigError("TASKFLOW_QUEUES must name at least one queue")
        if self.lease_seconds <= 0 or self.shutdown_grace_seconds < 0:
            raise ConfigError("TASKFLOW_LEASE_SECONDS must be > 0, grace >= 0")


_RATE = re.compile(r"^\s*(\d+)\s*(?:/|per)\s*(\d*)\s*([a-z]+)\s*$")
_PERIODS = {
    "s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0,
    "m": 60.0, "min": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hour": 3600.0, "hours": 3600.0,
    "d": 86400.0, "day": 86400.0, "days": 86400.0,
}  # fmt: skip


def parse_rate(text: str) -> tuple[int, float] | None:
    """``(count, period seconds)`` from ``100/minute``, ``20/second``, ``5/10s``, ``1000/hour``;
    ``None`` for an empty text (no limit). Raises ``ValueError`` saying the expected form."""
    if not text.strip():
        return None
    found = _RATE.match(text.lower())
    if found is None or found.group(3) not in _PERIODS or int(found.group(1)) < 1:
        raise ValueError(
            f"expected COUNT/PERIOD such as 100/minute, 20/second or 5/10s, got {text!r}"
        )
    count, times, unit = int(found.group(1)), found.group(2), found.group(3)
    return count, (int(times) if times else 1) * _PERIODS[unit]


def networks(items: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """The trusted proxies as networks (an address is a one-address network)."""
    return tuple(ipaddress.ip_network(item, strict=False) for item in items)


# Variables read by other parts (tests, benchmarks), not by Settings.
ALLOWED_OTHER_PREFIXES = ("TASKFLOW_TEST_", "TASKFLOW_BENCH_")
CLIENT = frozenset({"TASKFLOW_URL", "TASKFLOW_KEY"})
"""The client's settings (``taskflow.client``, the invoke tasks, the dashboard's key)."""

_PARSERS: dict[str, Any] = {
    "home": Path,
    "database_url": Secret,
    "amqp_url": Secret,
    "amqp_prefix": str,
    "amqp_quorum": _bool,
    "redis_url": Secret,
    "s3_url": Secret,
    "host": str,
    "port": int,
    "metrics_port": lambda raw: int(raw) if raw.strip() else None,
    "dashboard_port": int,
    "concurrency": int,
    "prefetch": lambda raw: int(raw) if raw.strip() else None,
    "queues": _csv,
    "tasks": _csv,
    "demo": lambda raw: _bool(raw) if raw.strip() else None,
    "lease_seconds": _duration,
    "shutdown_grace_seconds": _duration,
    "promote_interval_seconds": _duration,
    "reaper_interval_seconds": _duration,
    "retention_completed": _duration,
    "retention_failed": _duration,
    "idempotency_ttl": _duration,
    "max_batch": int,
    "max_body_bytes": int,
    "max_log_bytes": int,
    "auth": lambda raw: raw.strip().lower(),
    "trusted_proxies": _csv,
    "rate_limit_submit": str.strip,
    "rate_limit_read": str.strip,
    "rate_limit_admin": str.strip,
    "max_backlog": lambda raw: int(raw) if raw.strip() else None,
    "cache_ttl": _duration,
    "stream_buffer": int,
    "stream_keepalive": _duration,
    "log_level": str,
    "log_json": _bool,
}


def _parse(name: str, raw: str) -> Any:
    value = _PARSERS[name](raw)
    if name.endswith("_url") and not value:
        return None
    return value
