"""Live streams: GET /api/v1/jobs/{id}/events and /api/v1/events (SSE), the seed's WebSocket
/api/v1/jobs/{id}/status, and GET /api/v1/metrics/stream; in memory and on PostgreSQL."""

from __future__ import annotations

import dataclasses
import json
import uuid
from typing import Any

import anyio
import pytest
from quart import Quart
from quart.testing.connections import WebsocketDisconnectError, WebsocketResponseError

from actors.runtime import Runtime
from taskflow.config import Settings
from taskflow.messages import JobProgressed
from tests.polling import wait_until
from tests.web.helpers import Client, assert_error, bad_fields, submit, terminal, wait_for
from tests.web.sse import Frame, Reader, open_stream
from web.app import create_app

pytestmark = pytest.mark.anyio

LIFECYCLE = {
    "submitted",
    "started",
    "progress",
    "succeeded",
    "failed",
    "scheduled",
    "dead_lettered",
    "cancelled",
    "replayed",
}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, stream_keepalive=0.3)


def lifecycle(reader: Reader) -> list[Frame]:
    return [f for f in reader.events if f.kind in LIFECYCLE]


def seq(frame: Frame) -> int:
    assert frame.id is not None
    return int(frame.id.rsplit(".", 1)[1])


# ------------------------------------------------------------------ one job


async def test_a_job_stream_sends_the_snapshot_then_each_event_then_ends(client: Client) -> None:
    (jid,) = await submit(client, "sleep", [{"seconds": 0.3}])
    async with open_stream(client, f"/api/v1/jobs/{jid}/events") as reader:
        await reader.to_end()
    assert reader.frames[0].retry == 2000
    snapshot, *rest = reader.events
    assert snapshot.kind == "snapshot" and snapshot.data["job"]["id"] == jid
    assert snapshot.data["status"] == snapshot.data["job"]["status"]
    kinds = [f.kind for f in rest]
    assert kinds[-1] == "end" and kinds[-2] == "succeeded", kinds
    assert set(kinds) <= LIFECYCLE | {"end"}
    assert "progress" in kinds
    end = rest[-1].data
    assert end == {"event": "end", "reason": "terminal", "status": "completed", "jobId": jid}
    events = lifecycle(reader)
    assert all(f.data["jobId"] == jid for f in events)
    ids = [seq(snapshot), *map(seq, events)]
    assert ids == sorted(ids) and len(set(ids[1:])) == len(ids) - 1  # ordered, no repeats
    succeeded = events[-1].data
    assert succeeded["status"] == "completed" and succeeded["result"] == {"slept": 0.3}
    assert succeeded["at"].endswith("Z")
    percents = [f.data["progress"] for f in events if f.kind == "progress"]
    assert percents == sorted(percents) and all(0 <= p <= 100 for p in percents)


async def test_a_subscriber_that_comes_after_the_end_gets_the_snapshot_and_the_end(
    client: Client,
) -> None:
    (jid,) = await submit(client, "echo", [{"x": 1}])
    await wait_for(client, jid, terminal)
    async with open_stream(client, f"/api/v1/jobs/{jid}/events") as reader:
        await reader.to_end(timeout=5)
    assert reader.kinds() == ["snapshot", "end"]
    assert reader.events[0].data["job"]["result"] == {"x": 1}
    assert reader.events[1].data["status"] == "completed"


async def test_a_retried_failure_does_not_end_the_stream_the_dead_letter_does(
    client: Client,
) -> None:
    # Two attempts, then a dead letter; delayed so the stream is open before the first.
    (jid,) = await submit(client, "fail", [{}], delay_seconds=0.3)
    async with open_stream(client, f"/api/v1/jobs/{jid}/events") as reader:
        await reader.to_end()
    assert reader.events[0].data["job"]["attempts"] == 0
    events = lifecycle(reader)
    failed = [f.data for f in events if f.kind == "failed"]
    assert [f["willRetry"] for f in failed] == [True, False]
    assert failed[0]["status"] == "scheduled" and failed[1]["status"] == "failed"
    assert failed[1]["error"]["code"] == "task_error"
    assert [f.kind for f in events].count("started") == 2
    assert events[-1].kind == "dead_lettered"
    assert reader.events[-1].data["status"] == "failed"
    assert [f.kind for f in reader.events].count("end") == 1


async def test_a_cancelled_job_ends_its_stream(client: Client) -> None:
    (jid,) = await submit(client, "sleep", [{"seconds": 30}])
    await wait_for(client, jid, lambda j: j["status"] == "in_progress")
    async with open_stream(client, f"/api/v1/jobs/{jid}/events") as reader:
        await reader.until_kind("snapshot")
        assert (await client.post(f"/api/v1/jobs/{jid}/cancel")).status_code == 200
        await reader.to_end()
    assert reader.kinds()[-2:] == ["cancelled", "end"]
    assert reader.events[-1].data["status"] == "cancelled"


async def test_an_idle_stream_sends_keep_alives(client: Client) -> None:
    (jid,) = await submit(client, "sleep", [{"seconds": 5}], delay_seconds=60)  # scheduled
    async with open_stream(client, f"/api/v1/jobs/{jid}/events") as reader:
        await reader.read_until(lambda r: sum(f.comment == "keep-alive" for f in r.frames) >= 2)
    assert reader.kinds() == ["snapshot"]
    assert reader.events[0].data["status"] == "scheduled"


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/api/v1/jobs/{missing}/events", 404, "job_not_found"),
        ("/api/v1/jobs/not-a-uuid/events", 422, "invalid_id"),
    ],
)
async def test_a_job_stream_refuses_before_it_starts(
    client: Client, path: str, status: int, code: str
) -> None:
    await assert_error(client.get(path.format(missing=uuid.uuid4())), status, code)


async def test_last_event_id_resumes_with_what_was_missed(client: Client) -> None:
    (jid,) = await submit(client, "sleep", [{"seconds": 0.6}], delay_seconds=0.3)
    async with open_stream(client, f"/api/v1/jobs/{jid}/events") as first:
        started = await first.until_kind("started")
    # Disconnected after "started": the reconnect names it, and gets the rest, no snapshot.
    await wait_for(client, jid, terminal)
    headers = {"Last-Event-ID": started.id or ""}
    async with open_stream(client, f"/api/v1/jobs/{jid}/events", headers) as again:
        await again.to_end()
    assert "snapshot" not in again.kinds()
    assert again.kinds()[-2:] == ["succeeded", "end"]
    assert all(seq(f) > seq(started) for f in lifecycle(again))
    # An id this process never gave: a fresh snapshot instead.
    headers = {"Last-Event-ID": "0000beef.7"}
    async with open_stream(client, f"/api/v1/jobs/{jid}/events", headers) as fresh:
        await fresh.to_end()
    assert fresh.kinds() == ["snapshot", "end"]


async def test_a_subscriber_that_falls_behind_is_told_and_gets_a_fresh_snapshot(
    runtime: Runtime, settings: Settings
) -> None:
    app = create_app(runtime, dataclasses.replace(settings, stream_buffer=4))
    client = app.test_client()
    (jid,) = await submit(client, "sleep", [{"seconds": 30}], delay_seconds=60)
    async with open_stream(client, f"/api/v1/jobs/{jid}/events") as reader:
        await reader.until_kind("snapshot")
        # A burst of 50 events reaches the hub at once: this stream can hold 4 of them.
        burst = [
            JobProgressed(job_id=jid, attempt=0, percent=float(i), message=None, at=1.0)
            for i in range(50)
        ]
        await runtime.resources.events.publish(burst)
        dropped = await reader.until_kind("dropped")
        await reader.read_until(lambda r: r.kinds().count("snapshot") == 2)
    # 4 buffered, and one handed straight to the stream waiting for it: the other 45 dropped
    assert dropped.data["dropped"] >= 45 and dropped.data["total"] >= 45
    assert runtime.tree.hub.statistics().dropped >= 45
    assert runtime.tree.hub.statistics().listeners == 0  # the disconnect let go of it


async def test_an_all_jobs_subscriber_that_falls_behind_skips_ahead_and_is_told(
    runtime: Runtime, settings: Settings
) -> None:
    app = create_app(runtime, dataclasses.replace(settings, stream_buffer=4))
    client = app.test_client()
    jid = str(uuid.uuid4())
    async with open_stream(client, "/api/v1/events?limit=0") as reader:
        await reader.until_kind("snapshot")
        burst = [
            JobProgressed(job_id=jid, attempt=1, percent=float(i), message=None, at=1.0)
            for i in range(50)
        ]
        await runtime.resources.events.publish(burst)
        dropped = await reader.until_kind("dropped")
        await reader.read_until(lambda r: len([f for f in r.events if f.kind == "progress"]) >= 4)
        (jid2,) = await submit(client, "echo", [{}])  # and it goes on
        await reader.read_until(
            lambda r: any(f.kind == "succeeded" and f.data["jobId"] == jid2 for f in r.events)
        )
    assert dropped.data == {"event": "dropped", "dropped": 46, "total": 46}
    kept = [f.data["progress"] for f in reader.events if f.kind == "progress"]
    assert kept == [46.0, 47.0, 48.0, 49.0]  # the newest ones


async def test_events_that_arrive_while_a_stream_waits_for_its_tick_are_never_dropped(
    runtime: Runtime, settings: Settings
) -> None:
    # A reader that keeps up, at a rate where a tick brings ten times the buffer.
    app = create_app(runtime, dataclasses.replace(settings, stream_buffer=4))
    client = app.test_client()
    jid = str(uuid.uuid4())
    async with open_stream(client, "/api/v1/events?limit=0") as reader:
        await reader.until_kind("snapshot")
        for step in range(40):
            burst = [
                JobProgressed(job_id=jid, attempt=1, percent=float(i), message=None, at=1.0)
                for i in range(step * 3, step * 3 + 3)
            ]
            await runtime.resources.events.publish(burst)
            await anyio.sleep(0.02)
        await reader.read_until(lambda r: len(lifecycle(r)) >= 120)
    assert "dropped" not in reader.kinds()
    assert [f.data["progress"] for f in lifecycle(reader)] == [float(i) for i in range(120)]


async def test_the_all_jobs_stream_writes_a_burst_in_a_few_writes(
    client: Client, runtime: Runtime
) -> None:
    jid = str(uuid.uuid4())
    async with client.request("/api/v1/events?limit=0") as connection:
        await connection.send_complete()
        assert b"event: snapshot" in await connection.receive() + await connection.receive()
        # 400 events over 2 s, 20 at a time every 100 ms
        for step in range(20):
            burst = [
                JobProgressed(job_id=jid, attempt=1, percent=float(i), message=None, at=1.0)
                for i in range(step * 20, step * 20 + 20)
            ]
            await runtime.resources.events.publish(burst)
            await anyio.sleep(0.1)
        writes, frames = 0, 0
        with anyio.move_on_after(0.6):
            while frames < 400:
                chunk = await connection.receive()
                writes += 1
                frames += chunk.count(b"event: progress\n")
        await connection.disconnect()
    assert frames == 400
    assert writes <= 2 / 0.25 + 3  # a write per 250 ms tick (and one for the last events)


DEFLATE = {"Accept-Encoding": "gzip, deflate, br"}  # what a browser's EventSource sends


async def test_a_stream_is_deflated_for_a_client_that_accepts_it_and_ends_whole(
    client: Client,
) -> None:
    (jid,) = await submit(client, "sleep", [{"seconds": 0.3}])
    async with open_stream(client, f"/api/v1/jobs/{jid}/events", DEFLATE) as packed:
        await packed.to_end()
    async with open_stream(client, f"/api/v1/jobs/{jid}/events") as plain:
        await plain.to_end()
    assert packed.encoding == "deflate" and plain.encoding is None
    headers = packed.connection.headers
    assert headers is not None and headers["Vary"] == "Accept-Encoding"
    assert packed.whole  # the final block and a matching Adler-32
    assert packed.frames[0].retry == 2000
    # the late subscriber sees the snapshot and the end; the same frames either way
    assert packed.kinds()[0] == "snapshot" and packed.kinds()[-1] == "end"
    assert plain.kinds() == ["snapshot", "end"]
    assert packed.events[-1].data == plain.events[-1].data
    for refused in ("deflate;q=0, gzip", "identity", "gzip"):
        async with open_stream(
            client, f"/api/v1/jobs/{jid}/events", {"Accept-Encoding": refused}
        ) as r:
            await r.to_end()
        assert r.encoding is None and r.kinds() == ["snapshot", "end"]


async def test_every_job_stream_deflated_or_not_carries_the_same_burst(
    client: Client, runtime: Runtime
) -> None:
    jid = str(uuid.uuid4())
    async with (
        open_stream(client, "/api/v1/events?limit=0", DEFLATE) as first,
        open_stream(client, "/api/v1/events?limit=0", DEFLATE) as second,
        open_stream(client, "/api/v1/events?limit=0") as plain,
    ):
        for reader in (first, second, plain):
            await reader.until_kind("snapshot")
        for step in range(10):
            burst = [
                JobProgressed(job_id=jid, attempt=1, percent=float(i), message="m", at=1.0)
                for i in range(step * 40, step * 40 + 40)
            ]
            await runtime.resources.events.publish(burst)
            await anyio.sleep(0.05)
        for reader in (first, second, plain):
            await reader.read_until(lambda r: len(lifecycle(r)) >= 400)
    assert first.encoding == second.encoding == "deflate" and plain.encoding is None
    events = [[(f.id, f.kind, f.data) for f in lifecycle(r)] for r in (first, second, plain)]
    assert events[0] == events[1] == events[2]
    assert [data["progress"] for _, _, data in events[0]] == [float(i) for i in range(400)]
    assert first.sent * 3 < plain.sent  # the same text in under a third of the bytes


async def test_a_closed_stream_lets_go_of_its_listener(client: Client, runtime: Runtime) -> None:
    (jid,) = await submit(client, "sleep", [{"seconds": 30}], delay_seconds=60)
    async with open_stream(client, f"/api/v1/jobs/{jid}/events") as reader:
        await reader.until_kind("snapshot")
        assert runtime.tree.hub.statistics().listeners == 1
    await wait_until(lambda: runtime.tree.hub.statistics().listeners == 0)


# ------------------------------------------------------------------ every job


async def test_the_all_jobs_stream_starts_with_counts_and_recent_jobs(client: Client) -> None:
    ids = await submit(client, "echo", [{"i": i} for i in range(3)])
    for jid in ids:
        await wait_for(client, jid, terminal)
    async with open_stream(client, "/api/v1/events?limit=2") as reader:
        snapshot = await reader.until_kind("snapshot")
    assert {job["id"] for job in snapshot.data["jobs"]} <= set(ids)
    assert len(snapshot.data["jobs"]) == 2
    assert set(snapshot.data["counts"]) >= {"pending", "completed", "failed"}


async def test_the_all_jobs_stream_filters_by_task_queue_and_status(client: Client) -> None:
    async with (
        open_stream(client, "/api/v1/events?task=echo&limit=0") as echo_only,
        open_stream(client, "/api/v1/events?status=failed&limit=0") as failures,
        open_stream(client, "/api/v1/events?queue=other&limit=0") as other,
        open_stream(client, "/api/v1/events?limit=0") as everything,
    ):
        for reader in (echo_only, failures, other, everything):
            await reader.until_kind("snapshot")
        (echo_id,) = await submit(client, "echo", [{}])
        (fail_id,) = await submit(client, "fail", [{}])
        (other_id,) = await submit(client, "echo", [{}], queue_name="other")
        for jid in (echo_id, fail_id, other_id):
            await wait_for(client, jid, terminal)
        done = {echo_id, other_id}
        await everything.read_until(
            lambda r: (
                {f.data["jobId"] for f in r.events if f.kind == "succeeded"} >= done
                and any(f.kind == "dead_lettered" for f in r.events)
            )
        )
        await echo_only.read_until(
            lambda r: {f.data["jobId"] for f in r.events if f.kind == "succeeded"} == done
        )
        await failures.read_until(lambda r: "dead_lettered" in r.kinds())
        await other.read_until(lambda r: "succeeded" in r.kinds())
    assert {f.data["jobId"] for f in lifecycle(echo_only)} == done
    assert {f.data["jobId"] for f in lifecycle(failures)} == {fail_id}
    assert {f.data["status"] for f in lifecycle(failures)} == {"failed"}
    assert {f.data["jobId"] for f in lifecycle(other)} == {other_id}
    assert {f.data["jobId"] for f in lifecycle(everything)} == {echo_id, fail_id, other_id}


async def test_a_watch_of_some_jobs_carries_only_theirs(client: Client) -> None:
    watched = await submit(client, "sleep", [{"seconds": 0.2}] * 2, delay_seconds=0.3)
    (other,) = await submit(client, "echo", [{}], delay_seconds=0.3)
    missing = str(uuid.uuid4())
    path = f"/api/v1/events?jobs={watched[0]},{missing}&jobs={watched[1]}"
    async with open_stream(client, path) as reader:
        snapshot = await reader.until_kind("snapshot")
        await reader.read_until(
            lambda r: {f.data["jobId"] for f in r.events if f.kind == "succeeded"} == set(watched)
        )
        await wait_for(client, other, terminal)
    assert {job["id"] for job in snapshot.data["jobs"]} == set(watched)  # the unknown one: left out
    assert {f.data["jobId"] for f in lifecycle(reader)} == set(watched)


async def test_a_watch_with_nothing_to_say_keeps_its_connection_alive(
    client: Client, runtime: Runtime
) -> None:
    mine, busy = str(uuid.uuid4()), str(uuid.uuid4())
    async with open_stream(client, f"/api/v1/events?jobs={mine}&activity=replayed") as reader:
        await reader.until_kind("snapshot")
        # Busy with other jobs' events for 1.2 s, then idle: keep-alives either way.
        for i in range(24):
            event = JobProgressed(job_id=busy, attempt=1, percent=float(i), message=None, at=1.0)
            await runtime.resources.events.publish([event])
            await reader.drain(0.05)
        busy_keepalives = sum(f.comment == "keep-alive" for f in reader.frames)
        await reader.read_until(
            lambda r: sum(f.comment == "keep-alive" for f in r.frames) >= busy_keepalives + 2
        )
    assert busy_keepalives >= 2  # every 0.3 s while the hub was busy with other jobs
    assert reader.kinds() == ["snapshot"]


async def test_activity_counts_what_happened_to_every_job(client: Client) -> None:
    async with open_stream(client, "/api/v1/events?limit=0&activity=true") as reader:
        await reader.until_kind("snapshot")
        ids = await submit(client, "echo", [{}] * 3)
        (failing,) = await submit(client, "fail", [{}])
        for jid in [*ids, failing]:
            await wait_for(client, jid, terminal)

        def total(key: str) -> int:
            return sum(f.data[key] for f in reader.events if f.kind == "activity")

        await reader.read_until(lambda r: total("succeeded") >= 3 and total("deadLettered") >= 1)
    assert total("submitted") == 4 and total("succeeded") == 3
    assert total("failed") == 2 and total("deadLettered") == 1  # two failed attempts
    assert lifecycle(reader) == []  # counts only: no job's events
    assert all(f.data["at"].endswith("Z") for f in reader.events if f.kind == "activity")


async def test_activity_of_chosen_kinds_only_comes_when_one_of_them_happens(
    client: Client,
) -> None:
    path = "/api/v1/events?limit=0&activity=submitted,dead_lettered"
    async with open_stream(client, path) as reader:
        await reader.until_kind("snapshot")
        (jid,) = await submit(client, "echo", [{}], delay_seconds=0.5)
        await reader.until_kind("activity")
        await wait_for(client, jid, terminal)  # it succeeds: not a kind asked for
        (failing,) = await submit(client, "fail", [{}], delay_seconds=0.5)
        await wait_for(client, failing, terminal)
        await reader.read_until(
            lambda r: any(f.data.get("deadLettered") for f in r.events if f.kind == "activity")
        )
    bodies = [f.data for f in reader.events if f.kind == "activity"]
    assert all(set(b) <= {"event", "at", "submitted", "deadLettered"} for b in bodies)
    assert all(any(b.get(k) for k in ("submitted", "deadLettered")) for b in bodies)
    assert sum(b.get("submitted", 0) for b in bodies) == 2


async def test_the_all_jobs_stream_validates_its_filters(client: Client) -> None:
    body = await assert_error(
        client.get("/api/v1/events?status=done&limit=500"), 422, "validation_error"
    )
    assert bad_fields(body) == {"status", "limit"}
    body = await assert_error(
        client.get("/api/v1/events?task=a&task_type=b"), 422, "validation_error"
    )
    assert bad_fields(body) == {"task_type"}
    body = await assert_error(client.get("/api/v1/events?jobs=abc"), 422, "validation_error")
    assert bad_fields(body) == {"jobs"}
    body = await assert_error(
        client.get("/api/v1/events?activity=submitted,exploded"), 422, "validation_error"
    )
    assert bad_fields(body) == {"activity"}
    many = ",".join(str(uuid.uuid4()) for _ in range(201))
    body = await assert_error(client.get(f"/api/v1/events?jobs={many}"), 422, "validation_error")
    assert bad_fields(body) == {"jobs"}


# ------------------------------------------------------------------ the seed's WebSocket


async def socket_messages(client: Client, path: str) -> tuple[list[dict[str, Any]], int]:
    """Every JSON message until the server closes; and the close code."""
    messages: list[dict[str, Any]] = []
    async with client.websocket(path) as socket:
        with anyio.fail_after(10):
            while True:
                try:
                    messages.append(json.loads(await socket.receive()))
                except WebsocketDisconnectError as closed:
                    return messages, int(closed.args[0])


async def test_the_websocket_sends_the_snapshot_each_event_and_closes_normally(
    client: Client,
) -> None:
    (jid,) = await submit(client, "sleep", [{"seconds": 0.3}])
    messages, code = await socket_messages(client, f"/api/v1/jobs/{jid}/status")
    assert code == 1000
    assert messages[0]["event"] == "snapshot" and messages[0]["job"]["id"] == jid
    assert messages[-1] == {
        "event": "end",
        "reason": "terminal",
        "status": "completed",
        "jobId": jid,
    }
    assert messages[-2]["event"] == "succeeded" and messages[-2]["status"] == "completed"
    assert all("status" in m for m in messages)  # the seed's clients read event.status


async def test_a_late_websocket_gets_the_snapshot_and_the_terminal_state(client: Client) -> None:
    (jid,) = await submit(client, "fail", [{}])
    await wait_for(client, jid, terminal)
    messages, code = await socket_messages(client, f"/api/v1/jobs/{jid}/status")
    assert code == 1000
    assert [m["event"] for m in messages] == ["snapshot", "end"]
    assert messages[0]["job"]["status"] == "failed" and messages[1]["status"] == "failed"


async def test_an_idle_websocket_gets_keep_alives(client: Client) -> None:
    (jid,) = await submit(client, "echo", [{}], delay_seconds=60)
    async with client.websocket(f"/api/v1/jobs/{jid}/status") as socket:
        first = json.loads(await socket.receive())
        second = json.loads(await socket.receive())
    assert first["event"] == "snapshot" and second["event"] == "keepalive"


@pytest.mark.parametrize(
    ("job", "status", "code"),
    [("{missing}", 404, "job_not_found"), ("not-a-uuid", 422, "invalid_id")],
)
async def test_the_websocket_refuses_before_the_handshake(
    client: Client, job: str, status: int, code: str
) -> None:
    path = f"/api/v1/jobs/{job.format(missing=uuid.uuid4())}/status"
    with pytest.raises(WebsocketResponseError) as refused:
        async with client.websocket(path) as socket:
            await socket.receive()
    await assert_error(refused.value.response, status, code)


# ------------------------------------------------------------------ metrics


async def test_the_metrics_stream_sends_the_history_then_a_snapshot_each_interval(
    client: Client,
) -> None:
    ids = await submit(client, "echo", [{}, {}])
    for jid in ids:
        await wait_for(client, jid, terminal)
    async with open_stream(client, "/api/v1/metrics/stream?interval=0.2") as reader:
        await reader.read_until(lambda r: r.kinds().count("metrics") >= 3)
    assert reader.kinds()[0] == "history"
    points = reader.events[0].data["points"]
    assert points and set(points[0]) >= {"at", "throughput", "p50", "p99", "dead_letters"}
    first, second = [f.data for f in reader.events if f.kind == "metrics"][:2]
    assert second["at"] > first["at"]
    assert second["tasks"]["echo"]["succeeded"] >= 2
    assert "recent_failures" in second and "actors_running" in second


async def test_the_metrics_stream_validates_its_interval(client: Client) -> None:
    for bad in ("0.01", "60", "soon"):
        body = await assert_error(
            client.get(f"/api/v1/metrics/stream?interval={bad}"), 422, "validation_error"
        )
        assert bad_fields(body) == {"interval"}


async def test_recent_failures_reach_the_metrics(client: Client, app: Quart) -> None:
    (jid,) = await submit(client, "fail", [{}])
    await wait_for(client, jid, terminal)
    body = await (await client.get("/api/v1/metrics")).get_json()
    mine = [f for f in body["recent_failures"] if f["job_id"] == jid]
    assert [f["will_retry"] for f in mine] == [False, True]  # newest first
    assert mine[0]["code"] == "task_error" and mine[0]["task"] == "fail"
