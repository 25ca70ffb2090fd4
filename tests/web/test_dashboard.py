"""The Panel dashboard: its poll against a real API socket, against a dead one, and the
``taskflow dashboard`` command served as a separate process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import anyio
import pytest

from actors.runtime import Runtime
from taskflow.config import Settings
from web.app import create_app
from web.dashboard import Dashboard, make_dashboard
from web.server import WebServer

ROOT = Path(__file__).resolve().parents[2]


def fetch_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as response:
        body: dict[str, Any] = json.loads(response.read())
        return body


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.anyio
@pytest.mark.parametrize("runtime", ["memory"], indirect=True)  # the page only sees HTTP
async def test_poll_shows_the_api_metrics(runtime: Runtime, settings: Settings) -> None:
    server = WebServer(app=create_app(runtime, settings), host="127.0.0.1", port=0)
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            await tg.start(server.run)
            api_url = f"http://127.0.0.1:{server.bound_port}"
            # Given 3 completed jobs and 1 dead letter
            for n in range(3):
                await runtime.submit("echo", {"n": n})
            await runtime.submit("fail", {})
            await runtime.wait_idle(timeout=10)

            # When the dashboard polls (jobs_by_status is refreshed from the store every
            # second by the metrics actor, so poll until the counts have caught up)
            dashboard = Dashboard(api_url)
            assert await dashboard.poll() is True
            while dashboard.completed.value + dashboard.failed.value < 4:
                await anyio.sleep(0.1)
                assert await dashboard.poll() is True

            # Then its widgets show what the API serves
            api = await anyio.to_thread.run_sync(fetch_json, f"{api_url}/api/v1/metrics")
            await server.stop()
    assert dashboard.last is not None
    by_status = api["jobs_by_status"]
    assert (dashboard.completed.value, dashboard.failed.value) == (3, 1)
    assert dashboard.completed.value == by_status["completed"]
    assert dashboard.failed.value == by_status["failed"]
    assert dashboard.pending.value == by_status["pending"] == 0
    assert dashboard.in_progress.value == by_status["in_progress"] == 0
    assert dashboard.workers_online.value == api["workers_online"]
    assert dashboard.last["totals"]["succeeded"] == api["totals"]["succeeded"] == 3
    assert dashboard.p50.value == pytest.approx(1000 * dashboard.last["end_to_end"]["p50"])
    assert dashboard.p99.value >= dashboard.p50.value > 0
    assert len(dashboard.series.data["jobs_per_s"]) >= 1
    assert dashboard.status.object.startswith("Connected to")
    assert set(dashboard.workers.data) == {"id", "online", "busy", "throughput"}


@pytest.mark.anyio
async def test_poll_of_a_dead_api_shows_unreachable_and_keeps_going() -> None:
    dashboard = Dashboard(f"http://127.0.0.1:{free_port()}", timeout=2.0)
    with anyio.fail_after(10):
        assert await dashboard.poll() is False
        assert await dashboard.poll() is False
    assert "API unreachable: " in dashboard.status.object
    assert dashboard.last is None
    assert dashboard.completed.value == 0


def test_make_dashboard_outside_a_server_is_a_static_page() -> None:
    import panel as pn

    page = make_dashboard("http://127.0.0.1:1", period_ms=500)
    assert isinstance(page, pn.viewable.Viewable)
    assert "TaskFlow" in page[0].object


def test_dashboard_command_serves_the_page_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "TASKFLOW_HOME": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "taskflow", "dashboard", "--port", str(port)],
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
