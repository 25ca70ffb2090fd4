"""``GET /metrics``: the Prometheus text exposition (prometheus-client) of this API process.

In distributed mode the numbers are cluster-wide: the metrics actor hears every process's
events and counts the jobs table. Requests are counted by URL rule (bounded), never by path.
"""

from __future__ import annotations

from quart import Blueprint, Quart, Response, request

from actors.exposition import SnapshotCollector, registry_of
from taskflow.keys import Scope
from web.auth import requires
from web.state import current_state

prometheus = Blueprint("prometheus", __name__)

UNMATCHED = "unmatched"
"""The route label of a request no URL rule matched (a 404 of an unknown path)."""


@prometheus.get("/metrics")
@requires(Scope.READ)
async def exposition() -> Response:
    """The Prometheus text exposition (format 0.0.4): job event counters by task, queue and
    event; histograms of queue wait, run time and end to end; gauges of jobs by status,
    queue depth, in flight and workers online; actor restarts; HTTP requests by route and
    status; this process's read cache by result. Cluster-wide in distributed mode."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    state = current_state()
    collector = SnapshotCollector(
        state.runtime.metrics, state.http, state.runtime.resources.cache.statistics
    )
    registry = registry_of(collector)
    return Response(generate_latest(registry), status=200, content_type=CONTENT_TYPE_LATEST)


def count_requests(app: Quart) -> None:
    """Count every response (error envelopes included) by route, method and status."""

    @app.after_request
    async def counted(response: Response) -> Response:
        rule = request.url_rule.rule if request.url_rule is not None else UNMATCHED
        current_state().http.record(rule, request.method, response.status_code)
        return response
