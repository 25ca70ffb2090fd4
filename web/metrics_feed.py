"""MetricsFeed: a dashboard process's one connection to ``GET /api/v1/metrics/stream``.

The API pushes its metrics (the body of ``GET /api/v1/metrics``) every ``interval`` seconds
after a ``history`` event with the last 10 minutes; the feed keeps those points and the
latest metrics, and tells every subscriber (each browser session of the dashboard) when
something arrived. However many sessions are open, the API sees one stream. A lost
connection is retried with backoff; meanwhile ``status`` says why, and the points stay.

asyncio only (httpx on the Bokeh server's loop); no Panel import here.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx

from actors.metrics import HISTORY_POINTS
from actors.metrics import HistoryPoint as Point
from taskflow.log import get_logger

log = get_logger("taskflow.dashboard")

STREAM_PATH = "/api/v1/metrics/stream"


def point_from_history(raw: Mapping[str, Any]) -> Point:
    """A point of the stream's ``history`` event (``HistoryPoint`` as JSON)."""
    return Point(
        at=float(raw["at"]),
        throughput=float(raw.get("throughput", 0.0)),
        failures=float(raw.get("failures", 0.0)),
        p50=float(raw.get("p50", 0.0)),
        p95=float(raw.get("p95", 0.0)),
        p99=float(raw.get("p99", 0.0)),
        dead_letters=int(raw.get("dead_letters", 0)),
        workers_online=int(raw.get("workers_online", 0)),
        queue_depth=dict(raw.get("queue_depth") or {}),
    )


def point_from_metrics(metrics: Mapping[str, Any]) -> Point:
    """The point of one ``metrics`` event (the body of ``GET /api/v1/metrics``)."""
    latency = metrics.get("end_to_end") or {}
    return Point(
        at=float(metrics["at"]),
        throughput=float(metrics.get("throughput_1s", 0.0)),
        failures=float(metrics.get("failures_1s", 0.0)),
        p50=float(latency.get("p50") or 0.0),
        p95=float(latency.get("p95") or 0.0),
        p99=float(latency.get("p99") or 0.0),
        dead_letters=int((metrics.get("jobs_by_status") or {}).get("failed", 0)),
        workers_online=int(metrics.get("workers_online", 0)),
        queue_depth=dict(metrics.get("queue_depth") or {}),
    )


class FeedError(Exception):
    """The stream could not be opened or broke (the message says why, for the page)."""


async def sse_events(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str, str]]:
    """``(event, data)`` of each Server-Sent Event in ``lines`` (comments skipped)."""
    kind, data = "message", list[str]()
    async for line in lines:
        if not line:
            if data:
                yield kind, "\n".join(data)
            kind, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                kind = value
            elif name == "data":
                data.append(value)


@dataclass(kw_only=True)
class MetricsFeed:
    """Inputs: the API's metrics stream. Outputs: ``points``, ``latest``, ``status`` and a
    call to each subscriber per update. Restart: ``run`` reconnects itself (backoff 0.5 s to
    5 s) and never raises but for cancellation."""

    api_url: str
    api_key: str | None = None
    interval: float = 1.0
    timeout: float = 5.0
    points: deque[Point] = field(default_factory=lambda: deque(maxlen=HISTORY_POINTS))
    latest: dict[str, Any] | None = None
    status: str = "connecting"
    live: bool = False
    updates: int = 0
    _subscribers: list[Callable[[], None]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"{self.api_url.rstrip('/')}{STREAM_PATH}?interval={self.interval:g}"

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` after each update; returns the function that stops it."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def subscribers(self) -> int:
        return len(self._subscribers)

    async def run(self) -> None:
        delay = 0.5
        while True:
            before = self.updates
            try:
                await self.read_stream()
                self._changed(live=False, status="the API closed the stream; reconnecting")
            except (FeedError, httpx.HTTPError, ValueError, KeyError) as exc:
                reason = str(exc) or type(exc).__name__
                self._changed(live=False, status=f"API unreachable: {reason}")
                log.warning("dashboard_feed_failed", url=self.url, error=reason)
            if self.updates > before + 1:  # it was live: reconnect soon, back off from there
                delay = 0.5
            await anyio.sleep(delay)
            delay = min(5.0, delay * 2)

    async def read_stream(self) -> None:
        """Read the stream until it ends; raises ``FeedError`` or httpx's errors."""
        headers = {"Accept": "text/event-stream"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        timeout = httpx.Timeout(self.timeout, read=max(15.0, 10 * self.interval))
        async with (
            httpx.AsyncClient(timeout=timeout) as client,
            client.stream("GET", self.url, headers=headers) as response,
        ):
            if response.status_code != 200:
                body = (await response.aread()).decode(errors="replace")
                raise FeedError(f"HTTP {response.status_code}: {_message(body)}")
            async for kind, data in sse_events(response.aiter_lines()):
                if kind == "history":
                    points = json.loads(data).get("points", [])
                    self.points.clear()
                    self.points.extend(point_from_history(p) for p in points)
                    self._changed(live=True, status="live")
                elif kind == "metrics":
                    self.latest = json.loads(data)
                    self.points.append(point_from_metrics(self.latest))
                    self._changed(live=True, status="live")
                elif kind == "end":
                    return

    def _changed(self, *, live: bool, status: str) -> None:
        self.live, self.status = live, status
        self.updates += 1
        for callback in list(self._subscribers):
            try:
                callback()
            except Exception as exc:  # one broken session must not stop the others
                log.warning("dashboard_session_update_failed", error=repr(exc))


def _message(body: str) -> str:
    """The error envelope's message, else the start of the body."""
    try:
        envelope = json.loads(body)
        return str(envelope["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return body[:200] or "no body"
