"""Scenario 6 of the fault suite: a corpus of bad HTTP requests against a real process gets
4xx envelopes, never a 5xx, and the process keeps serving."""

from __future__ import annotations

import contextlib
import http.client
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.service import Service

pytestmark = pytest.mark.timeout(180)

NESTED = (
    b'{"task_type": "echo", "data": [{"payload": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b"}]}"
)

# (name, method, path, body, content type)
CORPUS: list[tuple[str, str, str, bytes, str]] = [
    ("not json", "POST", "/api/v1/jobs", b"{not json", "application/json"),
    ("invalid utf-8", "POST", "/api/v1/jobs", b'{"task_type": "\xff\xfe"}', "application/json"),
    (
        "wrong content type",
        "POST",
        "/api/v1/jobs",
        b"task_type=echo",
        "application/x-www-form-urlencoded",
    ),
    ("a json list", "POST", "/api/v1/jobs", b"[1, 2, 3]", "application/json"),
    (
        "wrong types",
        "POST",
        "/api/v1/jobs",
        b'{"task_type": 5, "data": "x", "priority": "high"}',
        "application/json",
    ),
    (
        "priority out of range",
        "POST",
        "/api/v1/jobs",
        b'{"task_type": "echo", "data": [{"payload": {}}], "priority": 99}',
        "application/json",
    ),
    (
        "negative delay",
        "POST",
        "/api/v1/jobs",
        b'{"task_type": "echo", "data": [{"payload": {}}], "delay_seconds": -1}',
        "application/json",
    ),
    (
        "payload not an object",
        "POST",
        "/api/v1/jobs",
        b'{"task_type": "echo", "data": [{"payload": 7}]}',
        "application/json",
    ),
    (
        "empty data",
        "POST",
        "/api/v1/jobs",
        b'{"task_type": "echo", "data": []}',
        "application/json",
    ),
    (
        "unknown task",
        "POST",
        "/api/v1/jobs",
        b'{"task_type": "nope", "data": [{"payload": {}}]}',
        "application/json",
    ),
    ("deeply nested", "POST", "/api/v1/jobs", NESTED, "application/json"),
    (
        "huge body",
        "POST",
        "/api/v1/jobs",
        b'{"task_type": "echo", "data": [{"payload": {"x": "' + b"a" * 3_000_000 + b'"}}]}',
        "application/json",
    ),
    (
        "too many items",
        "POST",
        "/api/v1/jobs",
        json.dumps({"task_type": "echo", "data": [{"payload": {}}] * 1001}).encode(),
        "application/json",
    ),
    ("malformed job id", "GET", "/api/v1/jobs/not-a-uuid", b"", "application/json"),
    (
        "unknown job id",
        "GET",
        "/api/v1/jobs/00000000-0000-4000-8000-000000000000",
        b"",
        "application/json",
    ),
    ("bad list filter", "GET", "/api/v1/jobs?status=bogus&limit=-5", b"", "application/json"),
    ("bad cursor", "GET", "/api/v1/jobs?cursor=%00%ff", b"", "application/json"),
    ("unknown route", "GET", "/api/v1/nope", b"", "application/json"),
    ("wrong method", "DELETE", "/api/v1/jobs", b"", "application/json"),
    ("cancel a malformed id", "POST", "/api/v1/jobs/%2e%2e/cancel", b"", "application/json"),
]


@pytest.fixture
def service(tmp_path: Path, pg_url: str) -> Iterator[Service]:
    svc = Service(home=tmp_path, env={"TASKFLOW_DATABASE_URL": pg_url})
    svc.start()
    yield svc
    svc.stop()


def send(svc: Service, method: str, path: str, body: bytes, content_type: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", svc.port, timeout=30)
    try:
        # The server may answer a body that is too large (by its Content-Length) and close
        # before the client finished sending it; its answer is still there to read.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.request(method, path, body=body or None, headers={"Content-Type": content_type})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_a_corpus_of_bad_requests_gets_4xx_envelopes_never_5xx(
    service: Service, capsys: pytest.CaptureFixture[str]
) -> None:
    statuses: dict[str, int] = {}
    for name, method, path, body, content_type in CORPUS:
        status, raw = send(service, method, path, body, content_type)
        statuses[name] = status
        assert 400 <= status < 500, (name, status, raw[:300])
        envelope = json.loads(raw)
        assert envelope["status"] == "error", name
        assert envelope["error"]["code"] and envelope["error"]["message"], name
        assert envelope["request_id"] and envelope["path"], name
        assert "Traceback" not in raw.decode("utf-8", "replace"), name
    # The process survived all of it and still serves
    status, body = service.submit("echo", [{"ok": True}])
    assert status == 202, body
    assert service.wait_terminal(body["taskIds"])[body["taskIds"][0]]["status"] == "completed"
    with capsys.disabled():
        print(
            f"\nmalformed: requests={len(CORPUS)} 5xx=0 statuses={sorted(set(statuses.values()))}"
        )
