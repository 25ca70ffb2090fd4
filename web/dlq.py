"""The dead-letter queue as a product: filtered listing with cursor paging, one dead letter
with its attempt history, replay (one, with a corrected payload; or many by filter) and purge.

The seed's replay paths stay (``/jobs/action/{id}/retry``, ``/jobs/action/retry``). Replaying
or purging never silently does nothing: an unknown job is a 404 ``job_not_found``, a job that
is not a dead letter a 409 ``not_dead_letter``, and an empty set a 200 with zero.
"""

from __future__ import annotations

from quart import Blueprint, Response, request
from quart_schema import document_querystring, document_request
from quart_schema import document_response as documented

from taskflow.jobs import Job, JobStatus
from taskflow.keys import Scope
from web.api import API_PREFIX, errors
from web.auth import current_caller, requires
from web.dlq_parsing import (
    FILTERS,
    parse_dead_letter_query,
    parse_flag,
    parse_limit,
    parse_replay_body,
)
from web.parsing import decode_json, encode_cursor, is_json, job_id
from web.responses import ApiError, json_response
from web.schemas import (
    DeadLetterListQuery,
    DeadLetterPage,
    JobOut,
    PurgeQuery,
    PurgeResponse,
    ReplayAllResponse,
    ReplayManyQuery,
    ReplayOneResponse,
    ReplayRequestBody,
    job_out,
)
from web.state import current_state

dlq = Blueprint("dlq", __name__, url_prefix=API_PREFIX)


@dlq.get("/dlq")
@requires(Scope.READ)
@document_querystring(DeadLetterListQuery)
@documented(DeadLetterPage, 200)
@errors(422, 503)
async def list_dead_letters() -> Response:
    """List dead letters (jobs that failed for good), newest first by when they died, each
    with its last error, attempts, attempt history and lineage.

    Filters combine: ``task_type``, ``queue_name``, ``error_code``, ``since``/``until``,
    ``q``. Page with ``cursor`` (the previous page's ``nextCursor``) or ``offset``.
    """
    query = parse_dead_letter_query(request.args)
    rows = await current_state().runtime.dead_letter_list(query)
    limit = query.limit - 1  # the query asked for one more, to tell if a next page exists
    shown, more = rows[:limit], len(rows) > limit
    last = shown[-1] if shown and more else None
    return json_response(
        DeadLetterPage(
            limit=limit,
            offset=query.offset,
            tasks=[job_out(job) for job in shown],
            next_cursor=encode_cursor(last.finished_at or 0.0, last.id) if last else None,
            next_offset=query.offset + len(shown) if more else None,
        )
    )


@dlq.get("/dlq/<task_id>")
@requires(Scope.READ)
@documented(JobOut, 200)
@errors(404, 422, 503)
async def get_dead_letter(task_id: str) -> Response:
    """One dead letter with its full attempt history (tracebacks included).

    404 ``job_not_found`` for an unknown id, 404 ``not_dead_letter`` for a job that exists
    but is not in the dead letters.
    """
    jid = job_id(task_id)
    runtime = current_state().runtime
    job = await runtime.get(jid)
    if job.status is not JobStatus.FAILED:
        raise _not_dead(job, 404)
    return json_response(job_out(job, tracebacks=True, logs=await runtime.log_facts(jid)))


@dlq.post("/jobs/action/<task_id>/retry")
@requires(Scope.ADMIN)
@document_request(ReplayRequestBody)
@documented(ReplayOneResponse, 200)
@errors(400, 404, 409, 415, 422, 503)
async def replay_dead_letter(task_id: str) -> Response:
    """Replay one dead letter: pending again, with a new attempt series.

    An optional JSON body ``{"payload": {...}, "reason": "..."}`` replays it with a corrected
    payload; the job keeps the first payload as ``originalPayload`` and records the replay
    (when, by whom, why) in ``replays``. 404 ``job_not_found`` for an unknown id, 409
    ``not_dead_letter`` for a job that is not in the dead letters.
    """
    runtime = current_state().runtime
    jid = job_id(task_id)
    replay = parse_replay_body(await _optional_body(), by=_who())
    job = await runtime.replay(jid, replay)
    if job is None:
        raise _not_dead(await runtime.get(jid), 409)  # JobNotFound -> 404 job_not_found
    return json_response(ReplayOneResponse(success=True, task_id=job.id, job=job_out(job)))


@dlq.post("/jobs/action/retry")
@requires(Scope.ADMIN)
@document_querystring(ReplayManyQuery)
@documented(ReplayAllResponse, 200)
@errors(400, 415, 422, 503)
async def replay_dead_letters() -> Response:
    """Replay every dead letter, or those matching the listing's filters, in bounded
    batches; answers with the count (0 when none). ``dry_run=true`` counts only;
    ``limit=N`` replays at most N (call again for the next ones: a progress bar). An
    optional JSON body ``{"reason": "..."}`` is recorded on each replayed job."""
    query = parse_dead_letter_query(request.args, paged=False)
    dry_run = parse_flag(request.args, "dry_run")
    limit = parse_limit(request.args)
    replay = parse_replay_body(await _optional_body(), by=_who())
    if replay.payload is not None:
        raise ApiError(
            422,
            "validation_error",
            "A corrected payload replays one job: use /jobs/action/{task_id}/retry.",
            details={"fields": [{"field": "payload", "message": "not allowed here"}]},
        )
    runtime = current_state().runtime
    if dry_run:
        matched = await runtime.count_dead_letters(query)
        return json_response(ReplayAllResponse(replayed=0, matched=matched, dry_run=True))
    replayed = await runtime.replay_all(query, replay, limit=limit)
    return json_response(ReplayAllResponse(replayed=replayed, matched=replayed, dry_run=False))


@dlq.delete("/dlq")
@requires(Scope.ADMIN)
@document_querystring(PurgeQuery)
@documented(PurgeResponse, 200)
@errors(422, 503)
async def purge_dead_letters() -> Response:
    """Delete the dead letters matching the filters, with their logs, in bounded batches.

    Without any filter, ``all=true`` is required (422 ``confirmation_required`` otherwise).
    ``dry_run=true`` counts only. 200 with zero when nothing matches.
    """
    query = parse_dead_letter_query(request.args, paged=False)
    dry_run = parse_flag(request.args, "dry_run")
    everything = parse_flag(request.args, "all")
    if not query.filtered and not everything:
        raise ApiError(
            422,
            "confirmation_required",
            "Purging every dead letter needs all=true; or narrow it with a filter.",
            details={"filters": list(FILTERS)},
        )
    runtime = current_state().runtime
    if dry_run:
        matched = await runtime.count_dead_letters(query)
        return json_response(PurgeResponse(purged=0, matched=matched, dry_run=True))
    purged = await runtime.purge_dead_letters(query)
    return json_response(PurgeResponse(purged=purged, matched=purged, dry_run=False))


def _not_dead(job: Job, status: int) -> ApiError:
    return ApiError(
        status,
        "not_dead_letter",
        f"Job {job.id} is not a dead letter (it is {job.status.value}).",
        details={"task_id": job.id, "status": job.status.value},
    )


def _who() -> str:
    """Who asks, as the replay record keeps it: ``key:NAME``, else ``api ADDRESS``."""
    return current_caller().who


async def _optional_body() -> object | None:
    """The JSON body if there is one; 415 if a body is not JSON."""
    body = await request.get_data(cache=False)
    assert isinstance(body, bytes)
    if not body.strip():
        return None
    if not is_json(request.mimetype):
        raise ApiError(
            415,
            "unsupported_media_type",
            "The request body must be JSON (Content-Type: application/json).",
            details={"content_type": request.mimetype or None},
        )
    document: object = decode_json(body)
    return document
