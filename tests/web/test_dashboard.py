"""The Panel dashboard: its feed reads the API's metrics stream over a real socket (pushed,
not polled), says why when the API cannot be read, shows a worker gone within two heartbeat
periods; ``taskflow dashboard`` serves it as its own process; ``up --dashboard`` starts it."""

from __future__ import annotations

import dataclasses
import itertools
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from actors.runtime import Runtime
from taskflow.config import Settings
from taskflow.messages import WorkerHeartbeat
from tests.e2e.service import free_port
from tests.polling import wait_until
from web.app import create_app
from web.dashboard import Dashboard, make_dashboard
from web.metrics_feed import MetricsFeed
from web.server import WebServer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def api_url(runtime: Runtime, settings: Settings) -> AsyncIterator[str]:
    server = WebServer(app=create_app(runtime, settings), host="127.0.0.1", port=0)
    async with anyio.create_task_group() as tg:
        await tg.start(server.run)
        yield f"http://127.0.0.1:{server.bound_port}"
        await server.stop()
        tg.cancel_scope.cancel()


@pytest.mark.anyio
@pytest.mark.parametrize("runtime", ["memory"], indirect=True)  # the page only sees HTTP
async def test_the_feed_follows_the_metrics_stream_and_the_page_shows_it(
    runtime: Runtime, api_url: str
) -> None:
    feed = MetricsFeed(api_url=api_url, interval=0.2)
    pushed: list[float] = []
    feed.subscribe(lambda: pushed.append(time.monotonic()))
    async with anyio.create_task_group() as tg:
        tg.start_soon(feed.run)
        # Given 3 completed jobs and 1 dead letter
        ids = [await runtime.submit("echo", {"n": n}) for n in range(3)]
        dead = await runtime.submit("fail", {})
        for job_id in [*ids, dead]:
            await runtime.wait(job_id, timeout=10)
        # When the stream has caught up (job counts refresh once a second)
        await wait_until(
            lambda: (
                feed.latest is not None
                and feed.latest["jobs_by_status"]["completed"] == 3
                and feed.latest["jobs_by_status"]["failed"] == 1
            ),
            timeout=10,
        )
        page = Dashboard(feed, pages_url="http://pages.example")
        page.refresh()
        tg.cancel_scope.cancel()
    # Then the page shows what the API pushed, with no poll of its own
    assert feed.live and feed.status == "live"
    assert (page.completed.value, page.dead_letters.value, page.pending.value) == (3, 1, 0)
    assert page.workers_online.value == 1 and page.workers.data["state"] == ["online"]
    one_row = page.workers_table.height
    assert one_row is not None and 40 < one_row < 80  # one row and the header, no empty band
    assert 0 < page.success_rate.value < 100
    assert len(page.rates.data["t"]) == len(feed.points) >= 2
    assert page.latency.data["p99"][-1] >= page.latency.data["p50"][-1] > 0
    assert page.queues.data["queue"] == ["default", "other"]
    assert dict(zip(page.actors.data["actor"], page.actors.data["state"], strict=True))["hub"] == (
        "running"
    )
    urls = page.failures.data["url"]
    assert urls and set(urls) == {f"http://pages.example/jobs/{dead}"}
    assert page.failures.data["retry"][0] == "dead letter"
    assert page.status.object.startswith(f"Live from {api_url}")
    gaps = [b - a for a, b in itertools.pairwise(pushed)]
    assert gaps and max(gaps) < 2.0  # an update at least every 2 s


@pytest.mark.anyio
@pytest.mark.parametrize("runtime", ["memory"], indirect=True)
async def test_a_worker_whose_heartbeats_stop_is_shown_gone_within_two_periods(
    runtime: Runtime, api_url: str
) -> None:
    feed = MetricsFeed(api_url=api_url, interval=0.2)
    page = Dashboard(feed)
    async with anyio.create_task_group() as tg:
        tg.start_soon(feed.run)
        beat = WorkerHeartbeat(worker_id="far-away", at=time.time(), interval=1.0, capacity=8)
        await runtime.resources.events.publish([beat])
        await wait_until(lambda: "far-away" in (feed.latest or {}).get("workers", {}))
        last_beat = time.monotonic()

        def gone() -> bool:
            page.refresh()
            states = dict(zip(page.workers.data["id"], page.workers.data["state"], strict=True))
            return states.get("far-away") == "gone"

        await wait_until(gone, timeout=5)
        took = time.monotonic() - last_beat
        tg.cancel_scope.cancel()
    assert took <= 2 * beat.interval


@pytest.mark.anyio
async def test_a_dead_api_shows_unreachable_and_the_feed_keeps_trying() -> None:
    feed = MetricsFeed(api_url=f"http://127.0.0.1:{free_port()}", timeout=1.0)
    page = Dashboard(feed)
    with anyio.move_on_after(2.5):
        await feed.run()
    page.refresh()
    assert feed.updates >= 2  # tried again
    assert "API unreachable: " in page.status.object
    assert feed.latest is None and page.completed.value == 0


@pytest.mark.anyio
@pytest.mark.parametrize("runtime", ["memory"], indirect=True)
async def test_an_api_that_wants_a_key_is_read_with_one_and_says_why_without(
    runtime: Runtime, settings: Settings
) -> None:
    app = create_app(runtime, dataclasses.replace(settings, auth="required"))
    _, key = await runtime.create_key("dashboard", ["read"])
    server = WebServer(app=app, host="127.0.0.1", port=0)
    async with anyio.create_task_group() as tg:
        await tg.start(server.run)
        url = f"http://127.0.0.1:{server.bound_port}"
        without = MetricsFeed(api_url=url, timeout=1.0)
        with anyio.move_on_after(1.5):
            await without.run()
        keyed = MetricsFeed(api_url=url, api_key=key, interval=0.2)
        tg.start_soon(keyed.run)
        await wait_until(lambda: keyed.latest is not None, timeout=10)
        live = keyed.live
        await server.stop()
        tg.cancel_scope.cancel()
    assert "HTTP 401" in without.status and "API key" in without.status
    assert live and keyed.latest is not None


def test_make_dashboard_outside_a_server_is_a_static_page() -> None:
    import panel as pn

    page = make_dashboard(MetricsFeed(api_url="http://127.0.0.1:1"))
    assert isinstance(page, pn.viewable.Viewable)
    assert "TaskFlow" in page[0].object


@pytest.mark.parametrize(
    "command", [("-m", "taskflow", "dashboard"), ("-m", "invoke", "dashboard")]
)
def test_dashboard_command_serves_the_page_and_stops_on_sigterm(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    port = free_port()
    env = {**os.environ, "TASKFLOW_HOME": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, *command, "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}/dashboard"
        deadline = time.monotonic() + 60
        html = ""
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            try:
                with urllib.request.urlopen(url, timeout=10) as response:
                    assert response.status == 200
                    html = response.read().decode()
                    break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.25)
        assert "bokeh" in html.lower(), "no answer on /dashboard within 60 s"
        assert "<title>TaskFlow</title>" in html
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
        finally:
            if proc.stdout:
                proc.stdout.close()
    assert code == 0
