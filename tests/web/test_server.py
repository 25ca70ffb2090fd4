"""WebServer over a real socket: port 0, readiness, graceful stop, cancellation."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from anyio.abc import TaskStatus

from actors.runtime import Runtime
from taskflow.config import Settings
from taskflow.errors import ConfigError
from web.app import create_app
from web.server import WebServer

pytestmark = pytest.mark.anyio


def fetch(url: str, timeout: float = 10.0) -> tuple[int, dict[str, str], Any]:
    """GET ``url`` with urllib (blocking: run it in a thread); header names in lower case."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            headers = {k.lower(): v for k, v in response.headers.items()}
            return response.status, headers, json.loads(response.read())
    except urllib.error.HTTPError as error:
        headers = {k.lower(): v for k, v in error.headers.items()}
        return error.code, headers, json.loads(error.read())


def make_server(runtime: Runtime, settings: Settings) -> tuple[WebServer, anyio.Event]:
    """A server whose app has a test-only ``/test/slow`` route (outside ``/api/v1``); the
    event is set when a slow request has reached the handler."""
    app = create_app(runtime, settings)
    entered = anyio.Event()

    async def slow() -> dict[str, bool]:
        entered.set()
        await anyio.sleep(0.5)
        return {"slept": True}

    app.add_url_rule("/test/slow", view_func=slow)
    return WebServer(app=app, host="127.0.0.1", port=0, graceful_timeout=5.0), entered


async def refused(port: int) -> bool:
    try:
        stream = await anyio.connect_tcp("127.0.0.1", port)
    except OSError:
        return True
    await stream.aclose()
    return False


async def test_serves_on_a_free_port_and_stops_after_in_flight_requests(
    runtime: Runtime, settings: Settings
) -> None:
    server, entered = make_server(runtime, settings)
    returned = anyio.Event()
    slow_result: list[tuple[int, dict[str, str], Any]] = []

    async def run_server(*, task_status: TaskStatus[None]) -> None:
        await server.run(task_status=task_status)
        returned.set()

    async def slow_request(url: str) -> None:
        slow_result.append(await anyio.to_thread.run_sync(fetch, url))

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            # Given a server started on port 0: started() means it accepts connections
            await tg.start(run_server)
            port = server.bound_port
            assert port is not None and port > 0
            assert server.statistics().serving

            status, headers, body = await anyio.to_thread.run_sync(
                fetch, f"http://127.0.0.1:{port}/api/v1/health"
            )
            assert status == 200
            assert body["status"] == "ok"
            assert headers["x-request-id"]
            assert "x-process-time-ms" in headers

            # When stop() comes while a slow request is in flight
            tg.start_soon(slow_request, f"http://127.0.0.1:{port}/test/slow")
            await entered.wait()
            assert server.statistics().requests_in_flight >= 1
            await server.stop()

            # Then the request completed, run() returned, and the port is closed
            assert returned.is_set()
        assert slow_result == [(200, slow_result[0][1], {"slept": True})]
    stats = server.statistics()
    assert not stats.serving
    assert stats.requests_in_flight == 0
    assert stats.requests_total >= 2
    assert port is not None and await refused(port)


async def test_cancelling_run_is_a_graceful_stop(runtime: Runtime, settings: Settings) -> None:
    # Cancelling hypercorn mid-request breaks it (hypercorn#184); run() turns its own
    # cancellation into the graceful shutdown trigger instead.
    server, entered = make_server(runtime, settings)
    slow_result: list[tuple[int, dict[str, str], Any]] = []

    async def slow_request(url: str) -> None:
        slow_result.append(await anyio.to_thread.run_sync(fetch, url))

    with anyio.fail_after(30):
        async with anyio.create_task_group() as requests:
            async with anyio.create_task_group() as tg:
                await tg.start(server.run)
                port = server.bound_port
                assert port is not None
                status, _, body = await anyio.to_thread.run_sync(
                    fetch, f"http://127.0.0.1:{port}/api/v1/nope"
                )
                assert (status, body["error"]["code"]) == (404, "not_found")
                requests.start_soon(slow_request, f"http://127.0.0.1:{port}/test/slow")
                await entered.wait()
                tg.cancel_scope.cancel()
            # run() has returned: the port is closed, and the slow request still completes
            assert port is not None and await refused(port)
        assert [(status, body) for status, _, body in slow_result] == [(200, {"slept": True})]
    assert not server.statistics().serving


async def test_stop_before_run_returns_at_once(runtime: Runtime, settings: Settings) -> None:
    server, _ = make_server(runtime, settings)
    await server.stop()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(server.run)
    assert not server.statistics().serving


async def test_run_leaves_no_cancellation_on_the_calling_task(
    runtime: Runtime, settings: Settings
) -> None:
    # hypercorn.asyncio.serve leaves cancelling() == 1 on the task that awaited it (stack
    # notes §2): a later asyncio.timeout in that task would raise CancelledError instead of
    # TimeoutError. WebServer must keep that off the task that calls run().
    server, _ = make_server(runtime, settings)
    after: list[int] = []

    async def like_a_supervisor(*, task_status: TaskStatus[None]) -> None:
        await server.run(task_status=task_status)  # returns after stop()
        task = asyncio.current_task()
        assert task is not None
        after.append(task.cancelling())
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01):
                await anyio.sleep_forever()

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            await tg.start(like_a_supervisor)
            await server.stop()
    assert after == [0]


async def test_a_port_in_use_fails_run_and_stop_does_not_wait(
    runtime: Runtime, settings: Settings
) -> None:
    first, _ = make_server(runtime, settings)
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            await tg.start(first.run)
            assert first.bound_port is not None
            second = WebServer(app=first.app, host="127.0.0.1", port=first.bound_port)
            with pytest.raises(ConfigError, match="already in use; stop the process"):
                await second.run()
            with anyio.fail_after(1):
                await second.stop()
            await first.stop()
