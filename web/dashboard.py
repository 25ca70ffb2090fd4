"""A live Panel dashboard over the API's ``GET /api/v1/metrics``.

It runs as its own process (``taskflow dashboard``), never inside the API: each browser
session polls the metrics JSON every ``period_ms`` with an async periodic callback (tornado's
``AsyncHTTPClient``) and updates its indicators, throughput chart, workers table and latency.
A failed poll only sets the status line ("API unreachable: ..."); the page keeps running.

Panel and Bokeh are heavy imports: import this module lazily (``taskflow/__main__.py`` does).
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import anyio
import panel
from bokeh.models import ColumnDataSource
from bokeh.models.widgets.tables import DataTable, TableColumn
from bokeh.plotting import figure
from tornado.httpclient import AsyncHTTPClient

pn: Any = panel  # Panel's constructors and pn.serve are untyped: use them through Any

METRICS_PATH = "/api/v1/metrics"
TITLE = "TaskFlow"
ROLLOVER = 300
"""Points kept in the throughput chart (5 minutes at the default period)."""


class Dashboard:
    """The widgets of one browser session and the ``poll`` that refreshes them."""

    def __init__(self, api_url: str, *, timeout: float = 5.0, api_key: str | None = None) -> None:
        self.api_url = api_url.rstrip("/")
        self.metrics_url = self.api_url + METRICS_PATH
        self.timeout = timeout
        self.api_key = api_key
        """Sent as ``Authorization: Bearer`` (a ``read`` key, when the API requires keys)."""
        self.last: dict[str, Any] | None = None

        def number(name: str, fmt: str = "{value}") -> Any:
            return pn.indicators.Number(label=name, value=0, format=fmt, font_size="32pt")

        self.pending = number("Pending")
        self.in_progress = number("In progress")
        self.completed = number("Completed")
        self.failed = number("Failed (dead letters)")
        self.throughput = number("Throughput (jobs/s, 1 s)", "{value:.1f}")
        self.workers_online = number("Workers online")
        self.p50 = number("End to end p50 (ms)", "{value:.1f}")
        self.p95 = number("End to end p95 (ms)", "{value:.1f}")
        self.p99 = number("End to end p99 (ms)", "{value:.1f}")
        self.status = pn.pane.Markdown(f"Connecting to {self.metrics_url} ...")

        self.series = ColumnDataSource(data={"t": [], "jobs_per_s": []})
        chart = figure(
            title="Throughput (jobs/s, 1 s window)",
            x_axis_type="datetime",
            height=260,
            sizing_mode="stretch_width",
            tools="",
            toolbar_location=None,
        )
        chart.line(x="t", y="jobs_per_s", source=self.series, line_width=2)
        self.workers = ColumnDataSource(data={"id": [], "online": [], "busy": [], "throughput": []})
        table = DataTable(
            source=self.workers,
            columns=[
                TableColumn(field="id", title="Worker"),
                TableColumn(field="online", title="Online"),
                TableColumn(field="busy", title="Busy / capacity"),
                TableColumn(field="throughput", title="Throughput (attempts/s)"),
            ],
            height=200,
            sizing_mode="stretch_width",
            index_position=None,
        )
        self.view: Any = pn.Column(
            pn.pane.Markdown(f"# {TITLE}"),
            self.status,
            pn.Row(
                self.pending,
                self.in_progress,
                self.completed,
                self.failed,
                self.throughput,
                self.workers_online,
            ),
            pn.pane.Bokeh(chart, sizing_mode="stretch_width"),
            pn.Row(self.p50, self.p95, self.p99),
            pn.pane.Markdown("### Workers"),
            pn.pane.Bokeh(table, sizing_mode="stretch_width"),
            sizing_mode="stretch_width",
        )

    async def fetch(self) -> dict[str, Any]:
        """One ``GET`` of the metrics JSON; raises on any failure."""
        client = AsyncHTTPClient(force_instance=True)
        try:
            response = await client.fetch(
                self.metrics_url,
                connect_timeout=self.timeout,
                request_timeout=self.timeout,
                headers={
                    "Accept": "application/json",
                    **({"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}),
                },
            )
        finally:
            client.close()
        body = json.loads(response.body)
        if not isinstance(body, dict):
            raise ValueError(f"expected a JSON object, got {type(body).__name__}")
        return body

    async def poll(self) -> bool:
        """Fetch the metrics and refresh every widget. Never raises: a failure shows
        "API unreachable: <reason>" in the status line and returns ``False``."""
        try:
            metrics = await self.fetch()
        except Exception as exc:  # the page must survive any poll failure
            reason = str(exc) or type(exc).__name__
            self.status.object = f"**API unreachable: {reason}** ({self.metrics_url})"
            return False
        try:
            self.update(metrics)
        except Exception as exc:  # e.g. an API version with other fields
            self.status.object = f"**Unexpected metrics: {type(exc).__name__}: {exc}**"
            return False
        return True

    def update(self, metrics: dict[str, Any]) -> None:
        by_status = metrics.get("jobs_by_status", {})
        self.pending.value = int(by_status.get("pending", 0))
        self.in_progress.value = int(by_status.get("in_progress", 0))
        self.completed.value = int(by_status.get("completed", 0))
        self.failed.value = int(by_status.get("failed", 0))
        rate = float(metrics.get("throughput_1s", 0.0))
        self.throughput.value = rate
        self.workers_online.value = int(metrics.get("workers_online", 0))
        latency = metrics.get("end_to_end", {})
        self.p50.value = 1000.0 * float(latency.get("p50") or 0.0)
        self.p95.value = 1000.0 * float(latency.get("p95") or 0.0)
        self.p99.value = 1000.0 * float(latency.get("p99") or 0.0)
        at = float(metrics.get("at") or time.time())
        self.series.stream(
            {"t": [datetime.fromtimestamp(at)], "jobs_per_s": [rate]}, rollover=ROLLOVER
        )
        workers: dict[str, dict[str, Any]] = metrics.get("workers", {})
        ids = sorted(workers)
        self.workers.data = {
            "id": ids,
            "online": ["yes" if workers[w].get("online") else "no" for w in ids],
            "busy": [f"{workers[w].get('busy', 0)} / {workers[w].get('capacity', 0)}" for w in ids],
            "throughput": [round(float(workers[w].get("throughput", 0.0)), 2) for w in ids],
        }
        self.last = metrics
        stamp = datetime.fromtimestamp(at).strftime("%H:%M:%S")
        self.status.object = f"Connected to {self.api_url}, metrics at {stamp}"


def make_dashboard(api_url: str, *, period_ms: int = 1000, api_key: str | None = None) -> Any:
    """The dashboard page (a ``pn.viewable.Viewable``). Inside a Bokeh server session it
    polls ``{api_url}/api/v1/metrics`` every ``period_ms``; outside one it is static."""
    dashboard = Dashboard(api_url, api_key=api_key)
    doc = pn.state.curdoc
    if doc is not None and doc.session_context is not None:
        pn.state.onload(dashboard.poll)
        pn.state.add_periodic_callback(dashboard.poll, period=period_ms)
    return dashboard.view


def serve_dashboard(
    api_url: str,
    host: str,
    port: int,
    *,
    allow_origins: Sequence[str] = (),
    api_key: str | None = None,
) -> None:
    """Serve the dashboard at ``http://host:port/dashboard`` until SIGINT or SIGTERM."""
    anyio.run(_serve, api_url, host, port, tuple(allow_origins), api_key, backend="asyncio")


async def _serve(
    api_url: str, host: str, port: int, allow_origins: tuple[str, ...], api_key: str | None
) -> None:
    # pn.serve(start=False) binds the Bokeh server to the running asyncio loop.
    server: Any = pn.serve(
        {"dashboard": lambda: make_dashboard(api_url, api_key=api_key)},
        address=host,
        port=port,
        websocket_origin=[f"{host}:{port}", *allow_origins],
        show=False,
        start=False,
        title=TITLE,
        verbose=False,
    )
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        server.start()
        print(f"TaskFlow dashboard: http://{host}:{port}/dashboard (API {api_url})", flush=True)
        try:
            async for _ in signals:
                break
        finally:
            server.stop()
