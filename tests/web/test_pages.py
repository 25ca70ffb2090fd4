"""The HTML pages and their htmx fragments, through the app: what they render, the submit
form's inline errors, the dead-letter actions, cancel, the login flow and the session cookie
(never in a URL, refused from another site), every asset from this server."""

from __future__ import annotations

import dataclasses
import json
import re
import uuid
from html.parser import HTMLParser
from typing import Any

import pytest
from quart import Quart

from actors.runtime import Runtime
from taskflow.config import Settings
from tests.web.helpers import Client, assert_error, get_job, submit, terminal, wait_for
from web.app import create_app

pytestmark = pytest.mark.anyio

HTMX = {"HX-Request": "true"}


class Controls(HTMLParser):
    """Every form control, label ``for``, and ``src``/``href`` of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.controls: list[dict[str, str | None]] = []
        self.label_for: set[str] = set()
        self.urls: list[str] = []
        self.in_label = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "label":
            self.in_label += 1
            if found.get("for"):
                self.label_for.add(str(found["for"]))
        if tag in ("input", "select", "textarea") and found.get("type") != "hidden":
            self.controls.append({**found, "_wrapped": "yes" if self.in_label else None})
        for name in ("src", "href", "action", "hx-get", "hx-post"):
            if found.get(name):
                self.urls.append(str(found[name]))

    def handle_endtag(self, tag: str) -> None:
        if tag == "label":
            self.in_label -= 1


def parse(html: str) -> Controls:
    parser = Controls()
    parser.feed(html)
    return parser


def unlabelled(page: Controls) -> list[dict[str, str | None]]:
    return [
        c
        for c in page.controls
        if not c.get("_wrapped") and c.get("id") not in page.label_for and not c.get("aria-label")
    ]


async def html_of(client: Client, path: str, status: int = 200, **kwargs: Any) -> str:
    response = await client.get(path, **kwargs)
    body = await response.get_data(as_text=True)
    assert response.status_code == status, body[:500]
    assert response.mimetype == "text/html"
    return body


async def dead_letter(client: Client, payload: dict[str, Any] | None = None) -> str:
    (jid,) = await submit(client, "picky", [payload or {"size": 0}])
    await wait_for(client, jid, terminal)
    return jid


# ------------------------------------------------------------------ pages


@pytest.mark.parametrize("path", ["/", "/api/v1/jobs/view/demo", "/dlq"])
async def test_each_page_renders_with_labels_and_only_local_assets(
    client: Client, path: str
) -> None:
    response = await client.get(path)
    html = await response.get_data(as_text=True)
    assert response.status_code == 200
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy
    page = parse(html)
    assert page.controls and unlabelled(page) == []
    assert all(not re.match(r"^(https?:)?//", url) for url in page.urls), page.urls
    assert '<script src="/static/vendor/htmx-2.0.11.min.js"' in html
    assert "<script>" not in html  # no inline code: the policy allows none


async def test_the_jobs_page_lists_jobs_with_status_progress_and_attempts(
    client: Client,
) -> None:
    (jid,) = await submit(client, "echo", [{"x": 1}])
    await wait_for(client, jid, terminal)
    html = await html_of(client, "/")
    row = re.search(rf'<tr id="job-{jid}".*?</tr>', html, re.S)
    assert row is not None
    assert 'data-status="completed"' in row.group(0) and ">Completed<" in row.group(0)
    assert "<progress" in row.group(0) and "1 / 3" in row.group(0)
    assert f'href="/jobs/{jid}"' in row.group(0)
    for name in ("echo", "sleep", "fail"):  # the registry's tasks in the form
        assert f'<option value="{name}"' in html


async def test_the_jobs_table_filters_and_pages(client: Client) -> None:
    ids = await submit(client, "echo", [{"i": i} for i in range(25)])
    (other,) = await submit(client, "echo", [{}], queue_name="other")
    for jid in [*ids, other]:
        await wait_for(client, jid, terminal)
    first = await html_of(client, "/ui/jobs")
    assert first.count('<tr id="job-') == 20
    older = re.search(r'hx-get="/ui/jobs\?([^"]*cursor=[^"]+)"', first)
    assert older is not None
    second = await html_of(client, "/ui/jobs?" + older.group(1).replace("&amp;", "&"))
    assert second.count('<tr id="job-') == 6 and "First page" in second
    shown = set(re.findall(r'<tr id="job-([^"]+)"', first + second))
    assert shown == {*ids, other}
    only_other = await html_of(client, "/ui/jobs?queue=other")
    assert re.findall(r'<tr id="job-([^"]+)"', only_other) == [other]
    assert "/ui/jobs?queue=other" in only_other  # the live refresh keeps the filter
    none = await html_of(client, "/ui/jobs?status=cancelled&task=echo")
    assert "No jobs match these filters" in none
    assert await html_of(client, "/?status=bogus")  # a page ignores a bad filter


async def test_the_job_page_shows_the_timeline_result_and_error(client: Client) -> None:
    (ok,) = await submit(client, "echo", [{"answer": 42}])
    (bad,) = await submit(client, "fail", [{}])
    for jid in (ok, bad):
        await wait_for(client, jid, terminal)
    html = await html_of(client, f"/jobs/{ok}")
    assert re.search(r"Attempt 1</strong>:\s*completed", html)
    assert "&#34;answer&#34;: 42" in html or '"answer": 42' in html
    assert 'id="job-log"' in html and f'data-job-id="{ok}"' in html
    failed = await html_of(client, f"/jobs/{bad}")
    assert failed.count("<strong>Attempt") == 2
    assert re.search(r"Attempt 1</strong>:\s*retried", failed)
    assert re.search(r"Attempt 2</strong>:\s*dead lettered", failed)
    assert "this task always fails" in failed and "Traceback" in failed
    assert f"/dlq?q={bad}" in failed  # replay it from the dead letters
    assert unlabelled(parse(failed)) == []


@pytest.mark.parametrize("job", ["{missing}", "not-a-uuid"])
async def test_an_unknown_job_page_is_a_404_page(client: Client, job: str) -> None:
    html = await html_of(client, f"/jobs/{job.format(missing=uuid.uuid4())}", 404)
    assert "Job not found" in html


async def test_cancel_from_the_job_page(client: Client) -> None:
    (jid,) = await submit(client, "sleep", [{"seconds": 30}])
    await wait_for(client, jid, lambda j: j["status"] == "in_progress")
    response = await client.post(f"/ui/jobs/{jid}/cancel", headers=HTMX)
    assert response.status_code == 200
    assert "Cancel requested" in await response.get_data(as_text=True)
    job = await wait_for(client, jid, terminal)
    assert job["status"] == "cancelled"
    await assert_error(
        client.post(f"/ui/jobs/{jid}/cancel", headers=HTMX), 409, "invalid_transition"
    )


# ------------------------------------------------------------------ the submit form


async def post_form(client: Client, path: str, form: dict[str, str]) -> tuple[int, str, Any]:
    response = await client.post(path, form=form, headers=HTMX)
    return response.status_code, await response.get_data(as_text=True), response.headers


async def test_the_form_submits_a_job_and_comes_back_empty(client: Client) -> None:
    form = {
        "task": "sleep",
        "queue": "other",
        "priority": "7",
        "delay": "0",
        "payload": '{"seconds": 0.1}',
    }
    status, html, headers = await post_form(client, "/ui/jobs", form)
    assert status == 200, html
    (jid,) = headers["X-Submitted-Jobs"].split(",")
    assert f"Submitted job {jid[:8]}" in html
    assert '<option value="sleep" selected>' in html  # the task is kept for the next one
    assert "<textarea" in html and ">{}</textarea>" in html  # the payload is not
    job = await get_job(client, jid)
    assert (job["taskType"], job["queueName"], job["priority"]) == ("sleep", "other", 7)
    assert job["payload"] == {"seconds": 0.1}


async def test_the_form_with_an_idempotency_key_answers_the_first_job_again(
    client: Client,
) -> None:
    form = {"task": "echo", "payload": "{}", "idempotency_key": "form-once"}
    _, _, first = await post_form(client, "/ui/jobs", form)
    status, html, again = await post_form(client, "/ui/jobs", form)
    assert status == 200 and again["X-Submitted-Jobs"] == first["X-Submitted-Jobs"]
    assert "Already submitted with this idempotency key" in html


@pytest.mark.parametrize(
    ("form", "field", "text"),
    [
        ({"task": "echo", "payload": "{not json"}, "payload", "not valid JSON"),
        ({"task": "echo", "payload": "[1, 2]"}, "payload", "must be a JSON object"),
        ({"task": "nope", "payload": "{}"}, "task", "nope"),
        ({"task": "echo", "payload": "{}", "priority": "11"}, "priority", "9"),
        ({"task": "echo", "payload": "{}", "priority": "high"}, "priority", "integer"),
        ({"task": "echo", "payload": "{}", "delay": "-5"}, "delay", "0"),
        ({"task": "echo", "payload": "{}", "queue": "nowhere"}, "queue", "nowhere"),
        ({"task": "echo", "payload": "{}", "idempotency_key": "é"}, "idempotency_key", "ASCII"),
    ],
)
async def test_a_bad_form_comes_back_with_the_error_next_to_its_field(
    client: Client, form: dict[str, str], field: str, text: str
) -> None:
    status, html, headers = await post_form(client, "/ui/jobs", form)
    assert (status, headers.get("X-Form-Invalid")) == (200, "true"), html
    assert "X-Submitted-Jobs" not in headers
    control = "submit-key" if field == "idempotency_key" else f"submit-{field}"
    error = re.search(rf'<span class="error-text" id="{control}-error">([^<]*)</span>', html)
    assert error is not None, html
    assert text.lower() in error.group(1).lower()
    assert re.search(rf'id="{control}"[^>]*aria-invalid="true"', html, re.S)
    if "payload" in form:  # what was typed is kept, to be corrected
        assert form["payload"].replace('"', "&#34;") in html or form["payload"] in html


async def test_a_bad_form_stores_nothing(client: Client, runtime: Runtime) -> None:
    from taskflow.ports import JobQuery

    before = len(await runtime.list_jobs(JobQuery(limit=500)))
    await post_form(client, "/ui/jobs", {"task": "echo", "payload": "[]"})
    assert len(await runtime.list_jobs(JobQuery(limit=500))) == before


# ------------------------------------------------------------------ dead letters


async def test_the_dead_letter_page_lists_them_and_filters(client: Client) -> None:
    picky = await dead_letter(client)
    (failing,) = await submit(client, "fail", [{}])
    await wait_for(client, failing, terminal)
    html = await html_of(client, "/dlq")
    assert f'id="dead-{picky}"' in html and f'id="dead-{failing}"' in html
    assert "2 dead letters." in html
    only = await html_of(client, "/ui/dlq?task_type=picky")
    assert f'id="dead-{picky}"' in only and f'id="dead-{failing}"' not in only
    assert "1 dead letter match these filters" in only
    by_text = await html_of(client, f"/ui/dlq?q={failing}")
    assert f'id="dead-{failing}"' in by_text and "picky" not in by_text.split("<tbody")[1]
    bad = await html_of(client, "/ui/dlq?since=yesterday-ish")
    assert "Ignored filters that are not valid: since" in bad


async def test_replay_one_with_a_corrected_payload(client: Client) -> None:
    jid = await dead_letter(client, {"size": 0})
    form = {"payload": '{"size": 3}', "reason": "size fixed"}
    status, html, _ = await post_form(client, f"/ui/dlq/{jid}/replay", form)
    assert status == 200, html
    assert "Replayed with the corrected payload" in html
    job = await wait_for(client, jid, terminal)
    assert (job["status"], job["payload"], job["originalPayload"]) == (
        "completed",
        {"size": 3},
        {"size": 0},
    )
    assert job["replays"][0]["reason"] == "size fixed" and job["replays"][0]["payloadChanged"]
    status, html, headers = await post_form(client, f"/ui/dlq/{jid}/replay", form)
    assert status == 200 and headers["X-Form-Invalid"] == "true"
    assert "no longer a dead letter" in html


async def test_replay_one_unchanged_keeps_the_payload(client: Client) -> None:
    jid = await dead_letter(client, {"size": 0})
    job = await get_job(client, jid)
    import json

    same = json.dumps(job["payload"], indent=2)
    status, html, _ = await post_form(client, f"/ui/dlq/{jid}/replay", {"payload": same})
    assert status == 200 and "Replayed: pending again" in html
    replayed = await wait_for(client, jid, lambda j: j["replayCount"] == 1 and terminal(j))
    assert replayed["originalPayload"] is None and not replayed["replays"][0]["payloadChanged"]


async def test_replay_one_with_a_payload_that_is_not_json_changes_nothing(client: Client) -> None:
    jid = await dead_letter(client)
    status, html, headers = await post_form(client, f"/ui/dlq/{jid}/replay", {"payload": "{oops"})
    assert status == 200 and headers["X-Form-Invalid"] == "true"
    assert "not valid JSON" in html and "{oops" in html
    assert (await get_job(client, jid))["replayCount"] == 0


async def test_replay_all_and_purge_act_on_the_matching_ones(client: Client) -> None:
    picky = [await dead_letter(client) for _ in range(2)]
    (failing,) = await submit(client, "fail", [{}])
    await wait_for(client, failing, terminal)
    status, html, _ = await post_form(client, "/ui/dlq/replay?task_type=fail", {})
    assert status == 200 and "Replayed 1 dead letter." in html
    await wait_for(client, failing, lambda j: j["replayCount"] == 1 and terminal(j))
    status, html, _ = await post_form(client, "/ui/dlq/purge?task_type=picky", {})
    assert status == 200 and "Purged 2 dead letters." in html
    for jid in picky:
        assert (await client.get(f"/api/v1/jobs/{jid}")).status_code == 404
    assert (await get_job(client, failing))["status"] == "failed"  # died again: kept
    await assert_error(
        client.post("/ui/dlq/purge?since=garbage", headers=HTMX), 422, "validation_error"
    )


# ------------------------------------------------------------------ docs and assets


@pytest.mark.parametrize(
    ("path", "asset"),
    [
        ("/docs", "/static/vendor/swagger-ui-5.35.0/swagger-ui-bundle.js"),
        ("/redoc", "/static/vendor/redoc-2.5.4.standalone.js"),
    ],
)
async def test_the_interactive_docs_load_their_assets_from_this_server(
    client: Client, path: str, asset: str
) -> None:
    html = await html_of(client, path)
    assert asset in html and "/openapi.json" in html
    assert not re.search(r'(src|href)="(https?:)?//', html)
    response = await client.get(asset)
    assert response.status_code == 200 and len(await response.get_data()) > 500_000
    text = (await response.get_data()).decode(errors="replace")
    assert "cdn.redoc.ly" not in text and "cdnjs" not in text


@pytest.mark.parametrize(
    "asset",
    [
        "/static/taskflow.css",
        "/static/taskflow.js",
        "/static/docs.js",
        "/static/vendor/htmx-2.0.11.min.js",
        "/static/vendor/swagger-ui-5.35.0/swagger-ui.css",
    ],
)
async def test_assets_are_served_from_the_package(client: Client, asset: str) -> None:
    response = await client.get(asset)
    assert response.status_code == 200 and await response.get_data()


# ------------------------------------------------------------------ keys


@pytest.fixture
def keyed(runtime: Runtime, settings: Settings) -> Quart:
    return create_app(runtime, dataclasses.replace(settings, auth="required"))


async def login(client: Client, key: str, next_path: str = "/") -> Any:
    return await client.post("/login", form={"key": key, "next": next_path})


async def test_with_keys_required_a_page_sends_the_browser_to_login_once(
    keyed: Quart, runtime: Runtime
) -> None:
    client = keyed.test_client()
    response = await client.get("/dlq?task_type=fail")
    assert response.status_code == 302
    assert response.headers["Location"] == "/login?next=%2Fdlq%3Ftask_type%3Dfail"
    assert "login" in await html_of(client, "/login?next=/dlq")
    _, key = await runtime.create_key("operator", ["admin"])
    answer = await login(client, key, "/dlq?task_type=fail")
    assert answer.status_code == 303 and answer.headers["Location"] == "/dlq?task_type=fail"
    cookie = answer.headers["Set-Cookie"]
    assert "taskflow_session=" in cookie and "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie and "Path=/" in cookie
    assert key not in answer.headers["Location"]
    html = await html_of(client, "/")  # the cookie is kept by the test client
    assert "Key <code>operator</code>" in html
    assert (await client.get("/api/v1/jobs")).status_code == 200  # the API takes it too
    logout = await client.post("/logout", headers={"Origin": "http://localhost"})
    assert logout.status_code == 303
    assert (await client.get("/")).status_code == 302


@pytest.mark.parametrize(
    ("scopes", "secret", "status", "text"),
    [
        (None, "tf_not-a-key", 401, "unknown or revoked"),
        (["submit"], None, 403, "lacks the read scope"),
    ],
)
async def test_a_bad_key_at_login_is_refused_on_the_form(
    keyed: Quart,
    runtime: Runtime,
    scopes: list[str] | None,
    secret: str | None,
    status: int,
    text: str,
) -> None:
    client = keyed.test_client()
    if scopes is not None:
        _, secret = await runtime.create_key("writer", scopes)
    assert secret is not None
    answer = await login(client, secret)
    assert answer.status_code == status
    assert text in await answer.get_data(as_text=True)
    assert "Set-Cookie" not in answer.headers


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example", "evil", "/\\evil"])
async def test_login_only_goes_back_to_this_site(
    keyed: Quart, runtime: Runtime, target: str
) -> None:
    _, key = await runtime.create_key("operator", ["read"])
    answer = await login(keyed.test_client(), key, target)
    assert answer.headers["Location"] == "/"


async def test_the_cookie_cannot_act_from_another_site(keyed: Quart, runtime: Runtime) -> None:
    client = keyed.test_client()
    _, key = await runtime.create_key("operator", ["admin"])
    await login(client, key)
    form = {"task": "echo", "payload": "{}"}
    foreign = await client.post("/ui/jobs", form=form, headers={"Origin": "https://evil.example"})
    await assert_error(foreign, 403, "cross_site_request")
    cross = await client.post(
        "/api/v1/jobs",
        json={"task_type": "echo", "data": [{"payload": {}}]},
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    await assert_error(cross, 403, "cross_site_request")
    own = await client.post("/ui/jobs", form=form, headers={"Origin": "http://localhost", **HTMX})
    assert own.status_code == 200
    # A bearer key is not a cookie: another site's page cannot send one by itself.
    bearer = await keyed.test_client().post(
        "/api/v1/jobs",
        json={"task_type": "echo", "data": [{"payload": {}}]},
        headers={"Authorization": f"Bearer {key}", "Origin": "https://evil.example"},
    )
    assert bearer.status_code == 202


async def test_a_fragment_without_a_key_asks_htmx_to_go_to_login(keyed: Quart) -> None:
    response = await keyed.test_client().get("/ui/jobs", headers=HTMX)
    body = await assert_error(response, 401, "unauthorized")
    assert response.headers["HX-Redirect"] == "/login"
    assert body["error"]["details"]["required_scope"] == "read"


async def test_a_read_key_cannot_submit_from_the_page(keyed: Quart, runtime: Runtime) -> None:
    client = keyed.test_client()
    _, key = await runtime.create_key("viewer", ["read"])
    await login(client, key)
    response = await client.post(
        "/ui/jobs", form={"task": "echo"}, headers={"Origin": "http://localhost", **HTMX}
    )
    await assert_error(response, 403, "forbidden")


async def test_the_streams_take_the_session_cookie(keyed: Quart, runtime: Runtime) -> None:
    client = keyed.test_client()
    assert (await client.get("/api/v1/events?limit=0")).status_code == 401
    _, key = await runtime.create_key("viewer", ["read", "submit"])
    await login(client, key)
    (jid,) = await submit(client, "echo", [{}], headers={"Origin": "http://localhost"})
    await wait_for(client, jid, terminal)
    response = await client.get(f"/api/v1/jobs/{jid}/events")
    assert response.status_code == 200 and b"event: end" in await response.get_data()


async def test_auth_off_has_no_login(client: Client) -> None:
    response = await client.get("/login")
    assert response.status_code == 303 and response.headers["Location"] == "/"


async def test_the_websocket_takes_a_key_or_the_cookie_from_this_site_only(
    keyed: Quart, runtime: Runtime
) -> None:
    from quart.testing.connections import WebsocketResponseError

    _, key = await runtime.create_key("viewer", ["read"])
    jid = await runtime.submit("echo", {})
    await runtime.wait(jid, timeout=10)
    path = f"/api/v1/jobs/{jid}/status"

    async def first_message(client: Client, headers: dict[str, str]) -> Any:
        async with client.websocket(path, headers=headers) as socket:
            return json.loads(await socket.receive())

    anonymous = keyed.test_client()
    with pytest.raises(WebsocketResponseError) as refused:
        await first_message(anonymous, {})
    await assert_error(refused.value.response, 401, "unauthorized")
    bearer = await first_message(keyed.test_client(), {"Authorization": f"Bearer {key}"})
    assert bearer["event"] == "snapshot"
    browser = keyed.test_client()
    await login(browser, key)
    own = await first_message(browser, {"Origin": "http://localhost"})
    assert own["event"] == "snapshot"
    with pytest.raises(WebsocketResponseError) as foreign:
        await first_message(browser, {"Origin": "https://evil.example"})
    await assert_error(foreign.value.response, 403, "cross_site_request")


@pytest.mark.parametrize("trusted", [True, False])
async def test_behind_a_proxy_the_page_may_be_https_and_the_host_forwarded(
    runtime: Runtime, settings: Settings, trusted: bool
) -> None:
    proxies = ("127.0.0.1/32", "::1") if trusted else ()
    app = create_app(
        runtime, dataclasses.replace(settings, auth="required", trusted_proxies=proxies)
    )
    client = app.test_client()
    _, key = await runtime.create_key("operator", ["submit", "read"])
    await login(client, key)
    form = {"task": "echo", "payload": "{}"}
    tls_ended = await client.post("/ui/jobs", form=form, headers={"Origin": "https://localhost"})
    assert tls_ended.status_code == 200  # the scheme does not count: a proxy may end TLS
    forwarded = await client.post(
        "/ui/jobs",
        form=form,
        headers={"Origin": "https://jobs.example.com", "X-Forwarded-Host": "jobs.example.com"},
        scope_base={"client": ("127.0.0.1", 40000)},  # the proxy's address
    )
    if trusted:
        assert forwarded.status_code == 200
    else:  # anyone can send X-Forwarded-Host: only a trusted proxy's counts
        await assert_error(forwarded, 403, "cross_site_request")
