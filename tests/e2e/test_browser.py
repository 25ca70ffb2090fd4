"""The pages, the docs and the dashboard in a real browser: Debian's Chromium, headless, driven
by Playwright, against a real `taskflow up --dashboard` process. Every request to another
host is refused and recorded (the pages must work offline), every console error fails the
test, and each page is saved as a screenshot under perf/screenshots/ (ignored by git)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_service
from tests.e2e.service import Service, free_port, http
from tests.pg import admin, with_database

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

CHROMIUM = Path(os.environ.get("TASKFLOW_TEST_CHROMIUM", "/usr/bin/chromium"))
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
SHOTS = Path(__file__).resolve().parents[2] / "perf" / "screenshots"
LOCAL = ("http://127.0.0.1", "ws://127.0.0.1", "data:", "blob:", "about:")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require_service("playwright", "pip install -e '.[dev]' installs it")
    if not CHROMIUM.exists():
        require_service("chromium", f"{CHROMIUM} is missing: apt-get install -y chromium")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=ARGS, headless=True
        )
        yield chromium
        chromium.close()


def start(home: Path, env: dict[str, str], *command: str) -> Service:
    svc = Service(home=home, env=env, command=command)
    svc.start()
    return svc


@pytest.fixture(scope="module")
def database(pg_server_url: str, pg_template: str) -> Iterator[str]:
    name = f"tf_browser_{uuid.uuid4().hex[:12]}"
    admin(pg_server_url, f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    yield with_database(pg_server_url, name)
    admin(pg_server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, database: str) -> Iterator[Service]:
    dashboard = free_port()
    env = {"TASKFLOW_DATABASE_URL": database, "TASKFLOW_DASHBOARD_PORT": str(dashboard)}
    svc = start(tmp_path_factory.mktemp("up"), env, "up", "--dashboard")
    svc.env["dashboard_url"] = f"http://127.0.0.1:{dashboard}/dashboard"
    yield svc
    assert svc.stop() == 0, svc.tail()


class Watch:
    """What a page did that it must not: console errors, uncaught exceptions, requests to
    any host but this machine's."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        self.external: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text}")

    def route(self, route: Any) -> None:
        url = route.request.url
        if url.startswith(LOCAL):
            route.continue_()
        else:
            self.external.append(url)
            route.abort()

    def check(self) -> None:
        assert self.external == [], f"requests that left the machine: {self.external}"
        assert self.errors == [], "\n".join(self.errors)


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    tab = context.new_page()
    watch = Watch(tab)
    context.route("**/*", watch.route)
    tab.watch = watch
    yield tab
    context.close()
    watch.check()


def shot(page: Any, name: str, *, full: bool = True) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full)
    return path


def submitted_id(response: Any) -> str:
    ids = response.headers.get("x-submitted-jobs", "")
    assert ids, response.status
    return str(ids.split(",")[0])


def wait_terminal(server: Service, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
    return server.wait_terminal([job_id], timeout=timeout)[job_id]


# ------------------------------------------------------------------ the jobs page


def test_a_job_submitted_on_the_page_runs_to_completed_without_a_reload(
    server: Service, page: Any
) -> None:
    streams: list[Any] = []
    page.on("response", lambda r: streams.append(r) if "/api/v1/events" in r.url else None)
    page.goto(f"{server.url}/")
    page.evaluate("window.__no_reload = true")
    page.select_option("#submit-task", "sleep")
    page.fill("#submit-payload", '{"seconds": 3, "steps": 6}')
    with page.expect_response(
        lambda r: r.url.endswith("/ui/jobs") and r.request.method == "POST"
    ) as answer:
        page.click("#submit-form button[type=submit]")
    job_id = submitted_id(answer.value)
    row = page.locator(f"#job-{job_id}")
    row.wait_for(timeout=10_000)
    seen: list[tuple[str, float]] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = row.get_attribute("data-status") or ""
        progress = float(row.locator("progress").evaluate("bar => bar.value"))
        if not seen or seen[-1] != (status, progress):
            seen.append((status, progress))
        if status == "in_progress" and 0 < progress < 100 and len(seen) > 2:
            shot(page, "jobs-running")
        if status == "completed":
            break
        time.sleep(0.05)
    assert seen[-1] == ("completed", 100.0), seen
    moving = sorted({p for s, p in seen if s == "in_progress" and 0 < p < 100})
    assert len(moving) >= 2, seen  # the bar moved, more than once, before the end
    assert row.locator('[data-field="status"]').inner_text() == "Completed"
    assert page.evaluate("window.__no_reload") is True  # the same page all along
    assert "Submitted job" in page.locator("#submit-form").inner_text()
    # the page's live rows came over a stream the browser asked to have deflated
    assert streams and all(r.headers.get("content-encoding") == "deflate" for r in streams)
    shot(page, "jobs")


def test_a_job_submitted_elsewhere_appears_in_the_table(server: Service, page: Any) -> None:
    page.goto(f"{server.url}/")
    page.locator("#live-state", has_text="Live").wait_for(timeout=10_000)
    status, body = server.submit("echo", [{"from": "rest"}])
    assert status == 202, body
    (job_id,) = body["taskIds"]
    page.locator(f'#job-{job_id}[data-status="completed"]').wait_for(timeout=15_000)


def test_the_form_shows_a_bad_payload_next_to_its_field(server: Service, page: Any) -> None:
    page.goto(f"{server.url}/")
    page.fill("#submit-payload", "{not json")
    page.click("#submit-form button[type=submit]")
    error = page.locator("#submit-payload-error")
    error.wait_for(timeout=5_000)
    assert "not valid JSON" in error.inner_text()
    assert page.get_attribute("#submit-payload", "aria-invalid") == "true"
    assert page.input_value("#submit-payload") == "{not json"  # kept, to be corrected


# ------------------------------------------------------------------ dead letters


def test_a_failing_job_reaches_the_dlq_and_a_corrected_replay_completes(
    server: Service, page: Any
) -> None:
    page.goto(f"{server.url}/dlq")
    page.wait_for_load_state("networkidle")
    # A job that fails its 3 attempts appears on the open page, without a reload
    status, body = server.submit("fail", [{"times": 99, "message": "bad input"}])
    assert status == 202, body
    (job_id,) = body["taskIds"]
    row = page.locator(f"#dead-{job_id}")
    row.wait_for(timeout=30_000)
    assert "bad input" in row.inner_text()
    shot(page, "dlq")
    # Replay it with a corrected payload
    row.locator("summary").click()
    row.locator("textarea").fill('{"times": 0}')
    row.locator('input[name="reason"]').fill("fixed in the browser")
    row.get_by_role("button", name="Replay job").click()
    page.locator(f"#dead-{job_id}", has_text="Replayed with the corrected payload").wait_for(
        timeout=10_000
    )
    job = wait_terminal(server, job_id)
    assert (job["status"], job["payload"], job["originalPayload"]) == (
        "completed",
        {"times": 0},
        {"times": 99, "message": "bad input"},
    )
    # Its page shows it completed, with both attempt series and the replay
    page.goto(f"{server.url}/jobs/{job_id}")
    page.locator('#job-live [data-field="status"]', has_text="Completed").wait_for(timeout=10_000)
    detail = page.locator("#job-detail").inner_text()
    assert "fixed in the browser" in detail and "payload corrected" in detail
    assert detail.count("Attempt 1") == 2  # first series, and the replay's
    page.locator("#log-state", has_text="complete").wait_for(timeout=15_000)
    assert "replayed" in page.locator("#job-log").inner_text()
    shot(page, "job")


def test_purge_asks_first(server: Service, page: Any) -> None:
    _, body = server.submit("fail", [{"times": 99}], max_attempts=1)
    (job_id,) = body["taskIds"]
    wait_terminal(server, job_id)
    page.goto(f"{server.url}/dlq?q={job_id}")
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.get_by_role("button", name="Purge 1 matching").click()
    time.sleep(0.5)
    assert server.job(job_id)["status"] == "failed"  # dismissed: nothing purged
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Purge 1 matching").click()
    page.locator("#dlq-table", has_text="Purged 1 dead letter.").wait_for(timeout=10_000)
    assert http("GET", f"{server.url}/api/v1/jobs/{job_id}")[0] == 404


# ------------------------------------------------------------------ the live streams


def test_late_subscribers_get_the_snapshot_and_the_terminal_state(
    server: Service, page: Any
) -> None:
    _, body = server.submit("echo", [{"late": True}])
    (job_id,) = body["taskIds"]
    wait_terminal(server, job_id)
    page.goto(f"{server.url}/")
    events = page.evaluate(
        """id => new Promise((resolve) => {
            const seen = [];
            const source = new EventSource(`/api/v1/jobs/${id}/events`);
            for (const name of ["snapshot", "end"]) {
                source.addEventListener(name, (m) => {
                    seen.push([name, JSON.parse(m.data).status]);
                    if (name === "end") { source.close(); resolve(seen); }
                });
            }
        })""",
        job_id,
    )
    assert events == [["snapshot", "completed"], ["end", "completed"]]
    messages = page.evaluate(
        """id => new Promise((resolve) => {
            const seen = [];
            const socket = new WebSocket(`ws://${location.host}/api/v1/jobs/${id}/status`);
            socket.onmessage = (m) => { const e = JSON.parse(m.data); seen.push([e.event, e.status]); };
            socket.onclose = (c) => resolve({seen, code: c.code});
        })""",
        job_id,
    )
    assert messages == {"seen": [["snapshot", "completed"], ["end", "completed"]], "code": 1000}


# ------------------------------------------------------------------ docs and dashboard


@pytest.mark.parametrize(("path", "item"), [("/docs", ".opblock"), ("/redoc", "[data-item-id]")])
def test_the_interactive_docs_render_offline(
    server: Service, page: Any, path: str, item: str
) -> None:
    page.goto(f"{server.url}{path}")
    page.locator(item).first.wait_for(timeout=20_000)
    assert page.locator(item).count() >= 15
    text = page.locator("body").inner_text()
    assert "/api/v1/jobs" in text or "Submit a batch of jobs" in text
    shot(page, path.strip("/"), full=False)


def test_the_dashboard_draws_throughput_after_a_burst(server: Service, page: Any) -> None:
    for _ in range(3):
        status, body = server.submit("echo", [{"n": n} for n in range(300)])
        assert status == 202, body
        time.sleep(1.0)
    server.submit("fail", [{"times": 99, "message": "for the dashboard"}])
    page.goto(server.env["dashboard_url"])
    page.wait_for_function(
        """() => {
            const doc = window.Bokeh && window.Bokeh.documents[0];
            const rates = doc && doc.get_model_by_name("throughput");
            return rates && Array.from(rates.data.succeeded).some((v) => v > 0);
        }""",
        timeout=30_000,
    )
    page.wait_for_function(
        """() => {
            const doc = window.Bokeh.documents[0];
            return doc.get_model_by_name("failures").data.job.length > 0;
        }""",
        timeout=30_000,
    )
    time.sleep(1.5)  # let the canvases paint before the screenshot
    peak = page.evaluate(
        "() => Math.max(...window.Bokeh.documents[0].get_model_by_name('throughput').data.succeeded)"
    )
    assert peak > 0
    shot(page, "dashboard")


# ------------------------------------------------------------------ usable and readable


def contrast(fg: list[float], bg: list[float]) -> float:
    def luminance(rgb: list[float]) -> float:
        def channel(c: float) -> float:
            c = c / 255
            return c / 12.92 if c <= 0.03928 else float(((c + 0.055) / 1.055) ** 2.4)

        r, g, b = (channel(c) for c in rgb[:3])
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    light, dark = sorted((luminance(fg), luminance(bg)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


LOOK = """() => {
    const rgb = (text) => text.match(/\\d+(\\.\\d+)?/g).map(Number);
    const body = getComputedStyle(document.body);
    const unlabelled = [...document.querySelectorAll("input, select, textarea")]
        .filter((el) => el.type !== "hidden")
        .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute("aria-label"))
        .map((el) => el.id || el.name);
    return {
        text: rgb(body.color), background: rgb(body.backgroundColor),
        scroll: document.documentElement.scrollWidth, width: window.innerWidth,
        unlabelled,
    };
}"""


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", [1280, 360])
def test_every_page_is_labelled_readable_and_fits_a_narrow_window(
    server: Service, browser: Any, scheme: str, width: int
) -> None:
    _, body = server.submit("fail", [{"times": 99}], max_attempts=1)
    (job_id,) = body["taskIds"]
    wait_terminal(server, job_id)
    context = browser.new_context(viewport={"width": width, "height": 800}, color_scheme=scheme)
    tab = context.new_page()
    watch = Watch(tab)
    context.route("**/*", watch.route)
    try:
        for name, path in (("jobs", "/"), ("job", f"/jobs/{job_id}"), ("dlq", "/dlq")):
            tab.goto(f"{server.url}{path}")
            tab.wait_for_load_state("networkidle")
            look = tab.evaluate(LOOK)
            assert look["unlabelled"] == [], (path, look["unlabelled"])
            assert look["scroll"] <= look["width"] + 1, (path, look)  # no sideways scrolling
            assert contrast(look["text"], look["background"]) >= 7.0, (path, scheme, look)
            dark_page = sum(look["background"][:3]) < 150
            assert dark_page == (scheme == "dark"), (path, scheme, look)
            shot(tab, f"{name}-{scheme}-{width}")
    finally:
        context.close()
    watch.check()


# ------------------------------------------------------------------ keys


def test_with_keys_the_pages_ask_once_and_keep_the_key_out_of_urls(
    browser: Any, tmp_path: Path, pg_url: str
) -> None:
    env = {"TASKFLOW_DATABASE_URL": pg_url, "TASKFLOW_AUTH": "required"}
    created = subprocess.run(
        [sys.executable, "-m", "taskflow", "keys", "create", "operator", "--scopes", "admin"],
        env={**os.environ, **env, "TASKFLOW_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    key = created.stdout.strip().splitlines()[-1]  # the key alone, on the last line
    assert key.startswith("tf_")
    svc = start(tmp_path, env, "up")
    context = browser.new_context()
    tab = context.new_page()
    watch = Watch(tab)
    context.route("**/*", watch.route)
    urls: list[str] = []
    tab.on("request", lambda r: urls.append(r.url))
    try:
        tab.goto(f"{svc.url}/dlq")
        assert "/login" in tab.url
        tab.fill("#login-key", key)
        tab.get_by_role("button", name="Sign in").click()
        tab.wait_for_url(f"{svc.url}/dlq")
        tab.goto(f"{svc.url}/")  # asked once: the session keeps it
        assert tab.url == f"{svc.url}/"
        tab.select_option("#submit-task", "echo")
        with tab.expect_response(lambda r: r.url.endswith("/ui/jobs")) as answer:
            tab.click("#submit-form button[type=submit]")
        job_id = submitted_id(answer.value)
        tab.locator(f'#job-{job_id}[data-status="completed"]').wait_for(timeout=15_000)
        assert "Key operator" in tab.locator("header").inner_text()
        # The seed's WebSocket from the signed-in page: the session cookie is its key.
        socket = tab.evaluate(
            """id => new Promise((resolve) => {
                const seen = [];
                const ws = new WebSocket(`ws://${location.host}/api/v1/jobs/${id}/status`);
                ws.onmessage = (m) => seen.push(JSON.parse(m.data).event);
                ws.onclose = (c) => resolve({seen, code: c.code});
            })""",
            job_id,
        )
        assert socket == {"seen": ["snapshot", "end"], "code": 1000}
    finally:
        context.close()
        svc.stop()
    watch.check()
    assert all(key not in url for url in urls)
