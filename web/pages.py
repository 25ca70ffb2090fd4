"""The HTML pages (Jinja2 + htmx, every asset served from the package): the jobs (``/`` and
the seed's ``/api/v1/jobs/view/demo``), one job (``/jobs/{id}``), the dead letters
(``/dlq``), and the login page used when API keys are required.

The pages render the store's state on the server; ``static/taskflow.js`` keeps them live
with the event streams (``web.streams``), and the htmx fragments they call are in
``web.fragments``. With ``TASKFLOW_AUTH=required`` a page without a usable key redirects
to ``/login``, which keeps the key in an HttpOnly, SameSite=Strict session cookie (never in
a URL); the API accepts that cookie too, so the pages' own requests and streams carry it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

from quart import Blueprint, Quart, Response, render_template, request
from quart_schema import hide
from werkzeug.datastructures import MultiDict

from taskflow.errors import JobNotFound, StoreError
from taskflow.jobs import Job, JobStatus
from taskflow.keys import Scope
from taskflow.ports import JobQuery
from web.auth import (
    LOGIN_PATH,
    SESSION_COOKIE,
    current_caller,
    open_route,
    page_route,
)
from web.dlq_parsing import FILTERS, parse_dead_letter_query
from web.parsing import decode_cursor, encode_cursor, job_id
from web.responses import ApiError
from web.state import current_state

pages = Blueprint(
    "pages",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)

PAGE_SIZE = 20
API_TITLE = "TaskFlow API"
STATUS_LABELS = {
    JobStatus.PENDING.value: "Pending",
    JobStatus.SCHEDULED.value: "Scheduled",
    JobStatus.IN_PROGRESS.value: "Running",
    JobStatus.COMPLETED.value: "Completed",
    JobStatus.FAILED.value: "Failed",
    JobStatus.CANCELLED.value: "Cancelled",
}
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
)
"""Every script, style and connection of a page is this server's: no CDN, no inline code."""
DOCS_CSP = (
    "default-src 'self'; script-src 'self' blob:; worker-src 'self' blob:; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'"
)
"""/docs and /redoc: their UIs inject styles (and ReDoc a worker), but every script and
request still stays on this server."""
OPENAPI_PATH = "/openapi.json"


def install_pages(app: Quart) -> None:
    """Register the pages, their assets and filters (/docs and /redoc included: Swagger UI
    and ReDoc are packaged, so they load nothing from the internet)."""
    app.jinja_env.filters.update(
        iso=_iso, when=_when, pretty=_pretty, status_label=lambda s: STATUS_LABELS.get(s, s)
    )
    hide(pages.send_static_file.__func__)  # type: ignore[attr-defined]  # not an API route
    app.register_blueprint(pages)


@pages.after_request
async def _security_headers(response: Response) -> Response:
    if response.mimetype == "text/html":
        docs = request.endpoint in ("pages.swagger_docs", "pages.redoc_docs")
        response.headers.setdefault("Content-Security-Policy", DOCS_CSP if docs else CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("Cache-Control", "no-store")
    return response


@pages.get("/docs")
@hide
@open_route
async def swagger_docs() -> str:
    """Swagger UI (interactive: try the API from the page), served from the package."""
    return await render_template("docs.html", title=API_TITLE, openapi=OPENAPI_PATH)


@pages.get("/redoc")
@hide
@open_route
async def redoc_docs() -> str:
    """ReDoc (a reference to read), served from the package."""
    return await render_template("redoc.html", title=API_TITLE, openapi=OPENAPI_PATH)


# ------------------------------------------------------------------ shared view data


@dataclass(frozen=True, slots=True, kw_only=True)
class JobFilters:
    status: str | None = None
    task: str | None = None
    queue: str | None = None

    @property
    def any(self) -> bool:
        return bool(self.status or self.task or self.queue)

    def params(self) -> dict[str, str]:
        items = (("status", self.status), ("task", self.task), ("queue", self.queue))
        return {k: v for k, v in items if v}


def job_filters(args: MultiDict[str, str]) -> JobFilters:
    """The jobs table's filters; a value that is not valid is ignored (a page, not an API)."""
    status = (args.get("status") or "").strip() or None
    if status not in STATUS_LABELS:
        status = None
    task = (args.get("task") or "").strip()[:200] or None
    queue = (args.get("queue") or "").strip()[:200] or None
    return JobFilters(status=status, task=task, queue=queue)


def common() -> dict[str, Any]:
    """What every page's template gets: the tasks, queues, statuses, who is signed in."""
    state = current_state()
    caller = current_caller()
    return {
        "tasks": state.runtime.task_names(),
        "queues": list(state.settings.queues),
        "statuses": list(STATUS_LABELS.items()),
        "key_name": caller.key.name if caller.key is not None and caller.via_cookie else None,
    }


async def jobs_table(args: MultiDict[str, str]) -> dict[str, Any]:
    """The jobs table's template data: one page, newest first, and the paging links."""
    filters = job_filters(args)
    raw_cursor = (args.get("cursor") or "").strip()
    before = decode_cursor(raw_cursor) if raw_cursor else None
    query = JobQuery(
        status=JobStatus(filters.status) if filters.status else None,
        task=filters.task,
        queue=filters.queue,
        limit=PAGE_SIZE + 1,
        before=before,
    )
    found = await current_state().runtime.list_jobs(query)
    page = found[:PAGE_SIZE]
    base = filters.params()
    next_cursor = (
        encode_cursor(page[-1].created_at, page[-1].id) if len(found) > PAGE_SIZE else None
    )
    here = {**base, **({"cursor": raw_cursor} if before is not None else {})}
    return {
        "jobs": page,
        "filters": filters,
        "first_page": before is None,
        "next_cursor": next_cursor,
        "base_query": urlencode(base),
        "next_query": urlencode({**base, "cursor": next_cursor or ""}),
        "query": urlencode(here),
    }


DLQ_PAGE = 20


def dlq_filters(args: MultiDict[str, str]) -> dict[str, str]:
    """The dead-letter filters given (non-empty ones), as query parameters."""
    return {k: v.strip() for k in FILTERS if (v := args.get(k) or "").strip()}


async def dlq_table(args: MultiDict[str, str], message: str | None = None) -> dict[str, Any]:
    """The dead-letter table's template data: how many match, one page, the next link.
    Filters that do not parse are dropped, and the message says so."""
    given = dlq_filters(args)
    params = MultiDict({**given, "limit": str(DLQ_PAGE)})
    if args.get("cursor"):
        params["cursor"] = str(args.get("cursor"))
    try:
        query = parse_dead_letter_query(params)
    except ApiError as exc:
        fields = (exc.details or {}).get("fields", [])
        bad = {str(f.get("field")) for f in fields if isinstance(f, dict)}
        given = {k: v for k, v in given.items() if k not in bad}
        query = parse_dead_letter_query(MultiDict({**given, "limit": str(DLQ_PAGE)}))
        message = f"Ignored filters that are not valid: {', '.join(sorted(bad))}."
    runtime = current_state().runtime
    rows = await runtime.dead_letter_list(query)
    matched = await runtime.count_dead_letters(dataclasses.replace(query, before=None, offset=0))
    shown = rows[:DLQ_PAGE]
    last = shown[-1] if len(rows) > DLQ_PAGE and shown else None
    next_cursor = encode_cursor(last.finished_at or 0.0, last.id) if last else None
    return {
        "jobs": shown,
        "matched": matched,
        "filters": given,
        "filters_any": bool(given),
        "next_cursor": next_cursor,
        "next_query": urlencode({**given, "cursor": next_cursor or ""}),
        "query": urlencode(given),
        "message": message,
    }


def empty_form() -> dict[str, str]:
    return {
        "task": "",
        "queue": "",
        "priority": "",
        "delay": "",
        "idempotency_key": "",
        "payload": "{}",
    }


# ------------------------------------------------------------------ pages


@pages.get("/")
@hide
@page_route
async def jobs_page() -> str:
    """The jobs: a submit form, filters, and a table whose rows update live."""
    return await render_template(
        "jobs.html",
        nav="jobs",
        form=empty_form(),
        errors={},
        message=None,
        **common(),
        **await jobs_table(request.args),
    )


@pages.get("/api/v1/jobs/view/demo")
@hide
@page_route
async def demo_page() -> str:
    """The seed's HTMX demo page: the jobs page."""
    return await jobs_page()


@pages.get("/jobs/<task_id>")
@hide
@page_route
async def job_page(task_id: str) -> Response | str:
    """One job: live status and progress, details, result or error, the attempt timeline,
    the live log tail and a cancel button."""
    job = await find_job(task_id)
    if job is None:
        return await error_page(404, "Job not found", f"There is no job {task_id!r}.")
    return await render_template("job.html", job=job, nav="jobs", **common())


async def find_job(task_id: str) -> Job | None:
    """The job, or ``None`` for an unknown or malformed id."""
    try:
        return await current_state().runtime.get(job_id(task_id))
    except (JobNotFound, ApiError):
        return None


@pages.get("/dlq")
@hide
@page_route
async def dlq_page() -> str:
    """The dead letters: filters, replay one (with an edited payload), replay all matching,
    purge all matching."""
    return await render_template("dlq.html", nav="dlq", **common(), **await dlq_table(request.args))


async def error_page(status: int, title: str, message: str) -> Response:
    body = await render_template("error.html", title=title, message=message, **common())
    return Response(body, status, content_type="text/html; charset=utf-8")


# ------------------------------------------------------------------ login


@pages.get(LOGIN_PATH)
@hide
@open_route
async def login_page() -> Response | str:
    """Ask for an API key once (only when keys are required)."""
    if current_state().settings.auth != "required":
        return _redirect("/")
    return await render_template("login.html", next=_next(request.args.get("next")), error=None)


@pages.post(LOGIN_PATH)
@hide
@open_route
async def login() -> Response:
    """Check the key (it must be live and have ``read``), keep it in the session cookie and
    go back to the page that asked; 401 with the form again otherwise."""
    state = current_state()
    form = await request.form
    target = _next(form.get("next"))
    if state.settings.auth != "required":
        return _redirect(target)
    secret = (form.get("key") or "").strip()
    try:
        key = await state.auth.keys.lookup(secret) if 0 < len(secret) <= 256 else None
    except StoreError:
        return await _login_again(target, "The key cannot be checked now; try again.", 503)
    if key is None or not key.active:
        return await _login_again(target, "This key is unknown or revoked.", 401)
    if not key.allows(Scope.READ):
        return await _login_again(target, f"The key {key.name!r} lacks the read scope.", 403)
    response = _redirect(target)
    response.set_cookie(
        SESSION_COOKIE,
        secret,
        httponly=True,
        samesite="Strict",
        secure=request.scheme == "https",
        path="/",
    )
    return response


@pages.post("/logout")
@hide
@open_route
async def logout() -> Response:
    """Forget the key (the cookie); back to the login page."""
    required = current_state().settings.auth == "required"
    response = _redirect(LOGIN_PATH if required else "/")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


async def _login_again(target: str, error: str, status: int) -> Response:
    body = await render_template("login.html", next=target, error=error)
    return Response(body, status, content_type="text/html; charset=utf-8")


def _next(raw: str | None) -> str:
    """Where to go after login: a path of this site only (never another host)."""
    if not raw:
        return "/"
    parts = urlsplit(raw)
    if parts.scheme or parts.netloc or not raw.startswith("/") or raw.startswith("//"):
        return "/"
    if "\\" in raw or any(ord(c) < 0x20 for c in raw):
        return "/"
    return raw


def _redirect(location: str) -> Response:
    return Response("", 303, headers={"Location": location})


# ------------------------------------------------------------------ template filters


def _iso(epoch: float | None) -> str:
    if epoch is None:
        return ""
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat().replace("+00:00", "Z")


def _when(epoch: float | None) -> str:
    if epoch is None:
        return ""
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def _pretty(value: Any) -> str:
    try:
        return json.dumps(value, indent=2, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return repr(value)
