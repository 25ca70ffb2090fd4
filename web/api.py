"""The REST API, version 1: jobs, dead letters, health and metrics under ``/api/v1``.

Paths and response fields stay compatible with the seed API (camelCase bodies, ``taskIds``,
``/jobs/action/.../retry``), without its defects: submit answers 202, an empty page or an
empty DLQ is a 200, idempotency is atomic in the store, and every error has one envelope.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from quart import Blueprint, Response, request
from quart_schema import document_headers, document_querystring, document_request
from quart_schema import document_response as documented

from actors.runtime import Runtime
from taskflow.jobs import TERMINAL, Job
from taskflow.keys import Scope
from taskflow.messages import NewJob
from taskflow.ports.cache import job_key
from taskflow.version import __version__
from web.auth import open_route, requires
from web.middleware import log
from web.parsing import (
    Page,
    decode_json,
    encode_cursor,
    idempotency_key,
    is_json,
    job_id,
    parse_job_query,
    parse_page,
    parse_submission,
    parse_wait,
)
from web.responses import ApiError, encode, json_response
from web.schemas import (
    DeadMessagePage,
    ErrorEnvelope,
    GetJobQuery,
    HealthResponse,
    JobOut,
    JobPage,
    ListJobsQuery,
    MetricsResponse,
    PageQuery,
    SubmitHeaders,
    SubmitRequest,
    SubmitResponse,
    dead_message_out,
    job_out,
    metrics_out,
)
from web.state import current_state

API_PREFIX = "/api/v1"
API_NAME = "TaskFlow API"

api = Blueprint("api", __name__, url_prefix=API_PREFIX)

F = TypeVar("F", bound=Callable[..., object])
T = TypeVar("T")


def errors(*statuses: int) -> Callable[[F], F]:
    """Document the error envelope for each of ``statuses`` (401 and 403 where a key is
    needed, 429 and 500 are always possible)."""

    def decorate(func: F) -> F:
        for status in sorted({*statuses, 429, 500}):
            func = documented(ErrorEnvelope, status)(func)
        return func

    return decorate


# ------------------------------------------------------------------ jobs


@api.post("/jobs")
@requires(Scope.SUBMIT)
@document_request(SubmitRequest)
@document_headers(SubmitHeaders)
@documented(SubmitResponse, 202)
@documented(SubmitResponse, 200)
@errors(400, 409, 413, 415, 422, 503)
async def submit_jobs() -> Response:
    """Submit a batch of jobs: one job per item of ``data``.

    429 ``backlog_full`` (with ``Retry-After``) while the pending backlog is at
    ``TASKFLOW_MAX_BACKLOG``.

    202 with the new ids. With an ``Idempotency-Key`` header, the same key and the same body
    within the key's lifetime answer 200 with the original response and
    ``Idempotent-Replayed: true``; the same key with another body is a 409.
    """
    state = current_state()
    if not is_json(request.mimetype):
        raise ApiError(
            415,
            "unsupported_media_type",
            "The request body must be JSON (Content-Type: application/json).",
            details={"content_type": request.mimetype or None},
        )
    key = idempotency_key(request.headers.get("Idempotency-Key"))
    limit = state.settings.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(
            413,
            "body_too_large",
            f"The request body is larger than {limit} bytes.",
            details={"max_body_bytes": limit},
        )
    body = await request.get_data(cache=False)  # MAX_CONTENT_LENGTH stops an endless stream
    assert isinstance(body, bytes)
    submission = parse_submission(
        decode_json(body), max_batch=state.settings.max_batch, queues=state.settings.queues
    )
    if state.admission is not None:
        await state.admission.admit()
    ids, replayed = await _submit(state.runtime, submission.jobs, key)
    if state.admission is not None and not replayed:
        state.admission.accepted(len(ids))
    response = SubmitResponse(
        task_ids=ids,
        number_of_messages=len(ids),
        status="scheduled" if submission.delayed else "pending",
        message="Job submitted successfully.",
    )
    if replayed:
        return json_response(response, 200, {"Idempotent-Replayed": "true"})
    return json_response(response, 202)


async def _submit(runtime: Runtime, jobs: list[NewJob], key: str | None) -> tuple[list[str], bool]:
    """Store the jobs; ``(ids, replayed)``, where ``replayed`` means the key matched an earlier
    identical request (the store checks and inserts atomically, so racing duplicates agree)."""
    inserted = await runtime.submit_batch(jobs, idempotency_key=key)
    return list(inserted.job_ids), inserted.replayed


@api.get("/jobs")
@requires(Scope.READ)
@document_querystring(ListJobsQuery)
@documented(JobPage, 200)
@errors(422, 503)
async def list_jobs() -> Response:
    """List jobs, newest first, filtered by status, task type and queue.

    Page with ``cursor`` (the previous page's ``nextCursor``): no duplicates and no gaps while
    jobs are added. ``offset`` also works, counted after the cursor. An empty page is a 200.
    """
    query = parse_job_query(request.args)
    limit = query.limit - 1  # the query asked for one more, to tell if a next page exists
    jobs = await current_state().runtime.list_jobs(query)
    page = jobs[:limit]
    next_cursor = (
        encode_cursor(page[-1].created_at, page[-1].id) if len(jobs) > limit and page else None
    )
    return json_response(
        JobPage(
            limit=limit,
            offset=query.offset,
            tasks=[job_out(job) for job in page],
            next_cursor=next_cursor,
        )
    )


@api.get("/jobs/<task_id>")
@requires(Scope.READ)
@document_querystring(GetJobQuery)
@documented(JobOut, 200)
@errors(404, 422, 503)
async def get_job(task_id: str) -> Response:
    """One job, with its progress, result or error (with the end of its traceback), its
    attempt history and lineage.

    With ``wait=S`` (0 < S <= 60) the answer is held until the job is terminal (woken by the
    event bus, no polling by the client), or answers the job as it is after S seconds.
    """
    state = current_state()
    runtime, wanted = state.runtime, job_id(task_id)
    wait = parse_wait(request.args)
    cache = runtime.resources.cache
    hit = await cache.get(job_key(wanted)) if state.settings.cache_ttl > 0 else None
    if hit is not None:
        return Response(hit, content_type="application/json", headers={"X-Cache": "hit"})
    job = await runtime.get(wanted)  # 404 at once for an unknown job
    if wait is not None and job.status not in TERMINAL:
        try:
            job = await runtime.wait(wanted, timeout=wait)
        except TimeoutError:
            job = await runtime.get(wanted)
    body = encode(job_out(job, tracebacks=True, logs=await runtime.log_facts(job.id)))
    if _settled(job, runtime.resources.clock.now()):
        await cache.put(job_key(wanted), body, state.settings.cache_ttl)
    return Response(body, content_type="application/json", headers={"X-Cache": "miss"})


SETTLED_SECONDS = 5.0
"""A terminal job's view is cached once it has been terminal this long: its last log lines
(shipped every 2 s) are in, so ``hasLogs`` no longer changes."""


def _settled(job: Job, now: float) -> bool:
    return job.status in TERMINAL and (job.finished_at or now) <= now - SETTLED_SECONDS


@api.post("/jobs/<task_id>/cancel")
@requires(Scope.SUBMIT)
@documented(JobOut, 200)
@errors(404, 409, 422, 503)
async def cancel_job(task_id: str) -> Response:
    """Cancel a pending, scheduled or running job.

    A running job answers with ``cancelRequested: true`` and is cancelled shortly after;
    a finished one is a 409 ``invalid_transition``.
    """
    job = await current_state().runtime.cancel(job_id(task_id))
    return json_response(job_out(job))


# ------------------------------------------------------------------ dead letters


@api.get("/dlq/messages")
@requires(Scope.READ)
@document_querystring(PageQuery)
@documented(DeadMessagePage, 200)
@errors(422, 503)
async def list_dead_messages() -> Response:
    """Transport messages that named no job to run (undecodable, not a job reference, or an
    unknown job), newest first, each with the reason it was dead-lettered."""
    page = parse_page(request.args)
    messages = await current_state().runtime.dead_messages(limit=page.limit + 1, offset=page.offset)
    shown, next_offset = _one_page(messages, page)
    return json_response(
        DeadMessagePage(
            limit=page.limit,
            offset=page.offset,
            messages=[dead_message_out(m) for m in shown],
            next_offset=next_offset,
        )
    )


def _one_page(rows: list[T], page: Page) -> tuple[list[T], int | None]:
    """``rows`` was read with ``limit + 1``: the page, and the next offset if there is more."""
    shown = rows[: page.limit]
    return shown, (page.offset + len(shown) if len(rows) > page.limit else None)


# ------------------------------------------------------------------ operations


@api.get("/health")
@open_route
@documented(HealthResponse, 200)
@errors(503)
async def health() -> Response:
    """Liveness and readiness: answers only if the process serves requests, and probes every
    dependency (store, transport). 503 ``unavailable`` names the ones that failed; 503
    ``draining`` while the process shuts down; 200 ``degraded`` while an actor is retrying
    a call that keeps failing."""
    runtime = current_state().runtime
    if runtime.draining:
        raise ApiError(
            503,
            "draining",
            "Shutting down: running jobs are finishing and no new work is taken.",
            headers={"Retry-After": "5"},
        )
    report = await runtime.health()
    failed = sorted(name for name, result in report.items() if result != "ok")
    if failed:
        log.warning("health_check_failed", checks=report)
        checks = {
            name: "ok" if result == "ok" else "error: " + result.split(":", 1)[0]
            for name, result in report.items()
        }
        raise ApiError(
            503,
            "unavailable",
            f"Not ready: {', '.join(failed)} failed its probe.",
            details={"checks": checks, "failed": failed},
            headers={"Retry-After": "5"},
        )
    retrying = runtime.retrying()
    return json_response(
        HealthResponse(
            name=API_NAME,
            status="degraded" if retrying else "ok",
            version=__version__,
            checks=report,
            retrying=retrying,
        )
    )


@api.get("/metrics")
@requires(Scope.READ)
@documented(MetricsResponse, 200)
@errors()
async def metrics() -> Response:
    """The metrics actor's latest snapshot: jobs by status, per-task counters, throughput,
    latency summaries, executor load and actor statistics."""
    runtime = current_state().runtime
    return json_response(metrics_out(runtime.metrics(), runtime.resources.cache.statistics()))
