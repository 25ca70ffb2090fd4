"""The live Panel dashboard over the API's metrics stream.

It runs as its own process (``taskflow dashboard``; ``taskflow up --dashboard`` starts one),
never inside the API. One ``MetricsFeed`` reads ``GET /api/v1/metrics/stream`` for the
whole process and pushes each update (every second) into every open browser session; no
session polls. A session shows: jobs by status, the dead letters, throughput and failures
over the last 10 minutes, end-to-end latency p50/p95/p99, queue depth per queue, the
workers (one whose heartbeats stopped shows as gone), the actors of the API's tree and
the recent failures, each linking to its job's page.

Panel and Bokeh are heavy imports: import this module lazily (``taskflow/__main__.py`` does).
"""

from __future__ import annotations

import signal
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import anyio
import panel
from bokeh.models import ColumnDataSource, DataRange1d, FactorRange
from bokeh.models.widgets.tables import DataTable, HTMLTemplateFormatter, TableColumn
from bokeh.plotting import figure

from actors.metrics import HISTORY_POINTS, HistoryPoint
from web.metrics_feed import MetricsFeed

pn: Any = panel  # Panel's constructors and pn.serve are untyped: use them through Any

TITLE = "TaskFlow"
PATH = "dashboard"


def _when(epoch: float) -> datetime:
    """Bokeh's datetime axes take naive datetimes as UTC."""
    return datetime.fromtimestamp(epoch, tz=UTC).replace(tzinfo=None)


def _chart(title: str, y_label: str) -> Any:
    chart = figure(
        title=title,
        x_axis_type="datetime",
        height=240,
        sizing_mode="stretch_width",
        tools="",
        toolbar_location=None,
    )
    chart.yaxis.axis_label = y_label
    return chart


class Dashboard:
    """The widgets of one browser session; ``refresh`` redraws them from the feed."""

    def __init__(self, feed: MetricsFeed, *, pages_url: str | None = None) -> None:
        self.feed = feed
        self.pages_url = (pages_url or feed.api_url).rstrip("/")
        self.shown_until = 0.0
        """``at`` of the last point already in the charts."""

        def number(name: str, fmt: str = "{value}") -> Any:
            return pn.indicators.Number(label=name, value=0, format=fmt, font_size="28pt")

        self.pending = number("Pending")
        self.in_progress = number("Running")
        self.completed = number("Completed")
        self.dead_letters = number("Dead letters")
        self.throughput = number("Jobs/s (1 s)", "{value:.1f}")
        self.success_rate = number("Success rate (60 s)", "{value:.1f}%")
        self.workers_online = number("Workers online")
        self.status = pn.pane.Markdown("Connecting to the API ...")

        self.rates = ColumnDataSource(
            data={"t": [], "succeeded": [], "failed": []}, name="throughput"
        )
        rates = _chart("Throughput, last 10 minutes (jobs/s)", "jobs/s")
        rates.line(x="t", y="succeeded", source=self.rates, line_width=2, legend_label="completed")
        rates.line(
            x="t",
            y="failed",
            source=self.rates,
            line_width=2,
            color="#d62728",
            legend_label="failed",
        )
        rates.legend.location = "top_left"
        self.latency = ColumnDataSource(
            data={"t": [], "p50": [], "p95": [], "p99": []}, name="latency"
        )
        latency = _chart("End-to-end latency (ms)", "ms")
        for key, color in (("p50", "#1f77b4"), ("p95", "#ff7f0e"), ("p99", "#d62728")):
            latency.line(
                x="t", y=key, source=self.latency, line_width=2, color=color, legend_label=key
            )
        latency.legend.location = "top_left"
        self.queues = ColumnDataSource(data={"queue": [], "depth": []}, name="queues")
        self.queue_range = FactorRange(factors=[])
        queues = figure(
            title="Queue depth (messages ready)",
            x_range=self.queue_range,
            y_range=DataRange1d(start=0),
            height=240,
            sizing_mode="stretch_width",
            tools="",
            toolbar_location=None,
        )
        queues.vbar(x="queue", top="depth", source=self.queues, width=0.6)

        self.workers = ColumnDataSource(
            data={"id": [], "state": [], "busy": [], "throughput": [], "seen": []}, name="workers"
        )
        self.actors = ColumnDataSource(
            data={"actor": [], "state": [], "restarts": []}, name="actors"
        )
        self.failures = ColumnDataSource(
            data={
                "at": [],
                "job": [],
                "url": [],
                "task": [],
                "attempt": [],
                "error": [],
                "retry": [],
            },
            name="failures",
        )
        self.workers_table = self._table(
            self.workers, ["id", "state", "busy", "throughput", "seen"], _rows_height(1)
        )
        link = HTMLTemplateFormatter(
            template='<a href="<%= url %>" target="_blank"><%= value %></a>'
        )
        self.view: Any = pn.Column(
            pn.pane.Markdown(f"# {TITLE}"),
            self.status,
            pn.FlexBox(
                self.pending,
                self.in_progress,
                self.completed,
                self.dead_letters,
                self.throughput,
                self.success_rate,
                self.workers_online,
            ),
            pn.Row(
                pn.pane.Bokeh(rates, sizing_mode="stretch_width"),
                pn.pane.Bokeh(latency, sizing_mode="stretch_width"),
                sizing_mode="stretch_width",
            ),
            pn.Row(
                pn.pane.Bokeh(queues, sizing_mode="stretch_width"),
                pn.Column(
                    pn.pane.Markdown("### Actors (API process)"),
                    pn.pane.Bokeh(self._table(self.actors, ["actor", "state", "restarts"], 360)),
                    sizing_mode="stretch_width",
                ),
                sizing_mode="stretch_width",
            ),
            pn.pane.Markdown("### Workers"),
            pn.pane.Bokeh(self.workers_table, sizing_mode="stretch_width"),
            pn.pane.Markdown("### Recent failures"),
            pn.pane.Bokeh(
                DataTable(
                    source=self.failures,
                    columns=[
                        TableColumn(field="at", title="When (UTC)", width=90),
                        TableColumn(field="job", title="Job", formatter=link, width=90),
                        TableColumn(field="task", title="Task", width=110),
                        TableColumn(field="attempt", title="Attempt", width=70),
                        TableColumn(field="error", title="Error", width=720),
                        TableColumn(field="retry", title="Next", width=100),
                    ],
                    height=240,
                    sizing_mode="stretch_width",
                    autosize_mode="none",  # the widths above, in pixels: the error gets room
                    index_position=None,
                ),
                sizing_mode="stretch_width",
            ),
            sizing_mode="stretch_width",
        )

    @staticmethod
    def _table(source: ColumnDataSource, fields: Sequence[str], height: int = 200) -> DataTable:
        return DataTable(
            source=source,
            columns=[TableColumn(field=f, title=f.capitalize()) for f in fields],
            height=height,
            sizing_mode="stretch_width",
            index_position=None,
        )

    def refresh(self) -> None:
        """Redraw from the feed: new chart points only, then every number and table."""
        feed = self.feed
        fresh = [p for p in feed.points if p.at > self.shown_until]
        if fresh:
            self._extend(fresh)
            self.shown_until = fresh[-1].at
        if feed.latest is not None:
            self.update(feed.latest)
        if feed.live and feed.latest is not None:
            stamp = datetime.fromtimestamp(float(feed.latest["at"]), tz=UTC)
            self.status.object = f"Live from {feed.api_url} (metrics at {stamp:%H:%M:%S} UTC)"
        elif not feed.live:
            self.status.object = f"**{feed.status}** ({feed.api_url})"

    def _extend(self, points: list[HistoryPoint]) -> None:
        t = [_when(p.at) for p in points]
        self.rates.stream(
            {
                "t": t,
                "succeeded": [p.throughput for p in points],
                "failed": [p.failures for p in points],
            },
            rollover=HISTORY_POINTS,
        )
        self.latency.stream(
            {
                "t": t,
                "p50": [1000 * p.p50 for p in points],
                "p95": [1000 * p.p95 for p in points],
                "p99": [1000 * p.p99 for p in points],
            },
            rollover=HISTORY_POINTS,
        )

    def update(self, metrics: dict[str, Any]) -> None:
        """Numbers and tables from one metrics body (``GET /api/v1/metrics``)."""
        by_status = metrics.get("jobs_by_status", {})
        self.pending.value = int(by_status.get("pending", 0)) + int(by_status.get("scheduled", 0))
        self.in_progress.value = int(by_status.get("in_progress", 0))
        self.completed.value = int(by_status.get("completed", 0))
        self.dead_letters.value = int(by_status.get("failed", 0))
        self.throughput.value = float(metrics.get("throughput_1s", 0.0))
        ok, bad = float(metrics.get("throughput_60s", 0.0)), float(metrics.get("failures_60s", 0.0))
        self.success_rate.value = 100.0 * ok / (ok + bad) if ok + bad > 0 else 100.0
        self.workers_online.value = int(metrics.get("workers_online", 0))
        depth: dict[str, int] = metrics.get("queue_depth") or {}
        names = sorted(depth)
        self.queue_range.factors = names
        self.queues.data = {"queue": names, "depth": [int(depth[n]) for n in names]}
        now = float(metrics.get("at", 0.0))
        workers: dict[str, dict[str, Any]] = metrics.get("workers", {})
        ids = sorted(workers, key=lambda w: (not workers[w].get("online"), w))
        self.workers.data = {
            "id": ids,
            "state": ["online" if workers[w].get("online") else "gone" for w in ids],
            "busy": [f"{workers[w].get('busy', 0)} / {workers[w].get('capacity', 0)}" for w in ids],
            "throughput": [f"{float(workers[w].get('throughput', 0.0)):.1f}/s" for w in ids],
            "seen": [
                f"{max(0.0, now - float(workers[w].get('last_seen', now))):.0f} s ago" for w in ids
            ],
        }
        self.workers_table.height = _rows_height(len(ids))  # no empty band under a few
        running = set(metrics.get("actors_running") or [])
        restarts: dict[str, int] = metrics.get("actor_restarts") or {}
        actors = sorted(set(restarts) | running)
        self.actors.data = {
            "actor": actors,
            "state": ["running" if a in running else "down" for a in actors],
            "restarts": [int(restarts.get(a, 0)) for a in actors],
        }
        failures: list[dict[str, Any]] = metrics.get("recent_failures") or []
        self.failures.data = {
            "at": [f"{_when(float(f['at'])):%H:%M:%S}" for f in failures],
            "job": [str(f["job_id"])[:8] for f in failures],
            "url": [f"{self.pages_url}/jobs/{f['job_id']}" for f in failures],
            "task": [str(f.get("task", "")) for f in failures],
            "attempt": [int(f.get("attempt", 0)) for f in failures],
            "error": [f"{f.get('code', '')}: {f.get('message', '')}" for f in failures],
            "retry": ["retry" if f.get("will_retry") else "dead letter" for f in failures],
        }


def make_dashboard(feed: MetricsFeed, *, pages_url: str | None = None) -> Any:
    """One session's page (a ``pn.viewable.Viewable``). Inside a Bokeh server session it is
    redrawn on each update of ``feed``; outside one it shows the feed as it is."""
    dashboard = Dashboard(feed, pages_url=pages_url)
    dashboard.refresh()
    doc = pn.state.curdoc
    if doc is not None and doc.session_context is not None:
        unsubscribe = feed.subscribe(lambda: doc.add_next_tick_callback(dashboard.refresh))
        doc.on_session_destroyed(lambda _context: unsubscribe())
    return dashboard.view


def serve_dashboard(
    api_url: str,
    host: str,
    port: int,
    *,
    allow_origins: Sequence[str] = (),
    api_key: str | None = None,
    pages_url: str | None = None,
) -> None:
    """Serve the dashboard at ``http://host:port/dashboard`` until SIGINT or SIGTERM."""
    feed = MetricsFeed(api_url=api_url, api_key=api_key)
    anyio.run(_serve, feed, host, port, tuple(allow_origins), pages_url, backend="asyncio")


async def _serve(
    feed: MetricsFeed, host: str, port: int, allow_origins: tuple[str, ...], pages_url: str | None
) -> None:
    # pn.serve(start=False) binds the Bokeh server to the running asyncio loop.
    server: Any = pn.serve(
        {PATH: lambda: make_dashboard(feed, pages_url=pages_url)},
        address=host,
        port=port,
        websocket_origin=[f"{host}:{port}", *allow_origins],
        show=False,
        start=False,
        title=TITLE,
        verbose=False,
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(feed.run)
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            server.start()
            bound = server.port
            print(
                f"TaskFlow dashboard: http://{host}:{bound}/{PATH} (metrics from {feed.api_url})",
                flush=True,
            )
            try:
                async for _ in signals:
                    break
            finally:
                server.stop()
                tg.cancel_scope.cancel()


def _rows_height(rows: int) -> int:
    """A table's height in pixels that shows ``rows`` rows (between 1 and 12) and its header."""
    return 28 + 25 * min(max(rows, 1), 12)
