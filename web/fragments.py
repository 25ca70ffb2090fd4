"""The htmx fragments behind the pages (``/ui/...``): HTML pieces, never whole pages.

Each fragment needs the same scope as its REST twin (``read`` to look, ``submit`` to submit
and cancel, ``admin`` to replay and purge) and gives the same answers, as HTML: a form that
does not validate comes back with its errors next to the fields (200 with ``X-Form-Invalid:
true``); other errors keep the JSON envelope, which ``taskflow.js`` shows in the page's
notice.
"""

from __future__ import annotations

import json
from typing import Any

from quart import Blueprint, Response, render_template, request
from quart_schema import hide
from werkzeug.datastructures import MultiDict

from taskflow.errors import IdempotencyConflict, NotStorable, UnknownTask, ValidationError
from taskflow.jobs import Job
from taskflow.keys import Scope
from taskflow.ports import DeadLetterQuery, ReplayRequest
from web.auth import current_caller, requires
from web.dlq_parsing import parse_dead_letter_query
from web.pages import common, dlq_table, empty_form, jobs_table
from web.parsing import idempotency_key, job_id, parse_submission
from web.responses import ApiError
from web.state import current_state

fragments = Blueprint("fragments", __name__, url_prefix="/ui")

FORM_FIELDS = {
    "task_type": "task",
    "queue_name": "queue",
    "priority": "priority",
    "delay_seconds": "delay",
    "data": "payload",
    "Idempotency-Key": "idempotency_key",
}
"""The submission's field names (as ``parse_submission`` reports them) -> the form's."""


def _html(body: str, status: int = 200) -> Response:
    return Response(body, status, content_type="text/html; charset=utf-8")


def _refused(body: str) -> Response:
    """A form that comes back with its errors: 200 (the page swaps it in, and the browser
    console shows no failed request for a user's typo), marked ``X-Form-Invalid: true``.
    The REST API answers the same mistakes with 422."""
    response = _html(body)
    response.headers["X-Form-Invalid"] = "true"
    return response


# ------------------------------------------------------------------ jobs


@fragments.get("/jobs")
@hide
@requires(Scope.READ)
async def jobs_fragment() -> Response:
    """The jobs table (filters and paging from the query string)."""
    body = await render_template("_jobs_table.html", **await jobs_table(request.args))
    return _html(body)


@fragments.get("/jobs/<task_id>/detail")
@hide
@requires(Scope.READ)
async def job_detail(task_id: str) -> Response:
    job = await current_state().runtime.get(job_id(task_id))
    return _html(await render_template("_job_detail.html", job=job))


@fragments.post("/jobs/<task_id>/cancel")
@hide
@requires(Scope.SUBMIT)
async def cancel(task_id: str) -> Response:
    """Cancel, then the refreshed details (409 ``invalid_transition`` once it finished)."""
    job = await current_state().runtime.cancel(job_id(task_id))
    return _html(await render_template("_job_detail.html", job=job))


@fragments.post("/jobs")
@hide
@requires(Scope.SUBMIT)
async def submit() -> Response:
    """The submit form: the job is stored, then the form comes back empty, saying so, with
    the new ids in ``X-Submitted-Jobs`` (the page refreshes its table); or the form as typed
    with each error next to its field (``X-Form-Invalid: true``). Nothing is stored then."""
    state = current_state()
    form = await request.form
    values = {**empty_form(), **{k: (form.get(k) or "") for k in empty_form()}}
    errors: dict[str, str] = {}
    payload = _payload(values["payload"], errors)
    body: dict[str, Any] = {"task_type": values["task"], "data": [{"payload": payload or {}}]}
    if values["queue"].strip():
        body["queue_name"] = values["queue"].strip()
    for name, field, kind in (("priority", "priority", int), ("delay", "delay_seconds", float)):
        text = values[name].strip()
        if text:
            try:
                body[field] = kind(text)
            except ValueError:
                errors[name] = f"must be a{'n integer' if kind is int else ' number'}"
    try:
        key = idempotency_key(values["idempotency_key"].strip() or None)
        submission = parse_submission(
            body, max_batch=state.settings.max_batch, queues=state.settings.queues
        )
    except ApiError as exc:
        _field_errors(exc, errors)
        return await _form(values, errors, invalid=True)
    if errors:
        return await _form(values, errors, invalid=True)
    try:
        if state.admission is not None:
            await state.admission.admit()
        inserted = await state.runtime.submit_batch(submission.jobs, idempotency_key=key)
    except UnknownTask as exc:
        errors["task"] = exc.message
        return await _form(values, errors, invalid=True)
    except (ValidationError, NotStorable) as exc:
        errors["payload"] = exc.message
        return await _form(values, errors, invalid=True)
    except IdempotencyConflict as exc:
        errors["idempotency_key"] = exc.message
        return await _form(values, errors, invalid=True)
    if state.admission is not None and not inserted.replayed:
        state.admission.accepted(len(inserted.job_ids))
    ids = list(inserted.job_ids)
    first = ids[0][:8]
    message = (
        f"Already submitted with this idempotency key: job {first}."
        if inserted.replayed
        else f"Submitted job {first}."
    )
    kept = {**empty_form(), "task": values["task"], "queue": values["queue"]}
    return await _form(kept, {}, message=message, submitted=ids)


async def _form(
    values: dict[str, str],
    errors: dict[str, str],
    *,
    invalid: bool = False,
    message: str | None = None,
    submitted: list[str] | None = None,
) -> Response:
    body = await render_template(
        "_submit_form.html", form=values, errors=errors, message=message, **common()
    )
    response = _refused(body) if invalid else _html(body)
    if submitted:
        response.headers["X-Submitted-Jobs"] = ",".join(submitted)
    return response


def _payload(text: str, errors: dict[str, str]) -> dict[str, Any] | None:
    """The payload field as a JSON object, or an error for the form."""
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        errors["payload"] = f"not valid JSON: {exc}"
        return None
    if not isinstance(value, dict):
        errors["payload"] = 'must be a JSON object, like {"seconds": 2}'
        return None
    return value


def _field_errors(error: ApiError, errors: dict[str, str]) -> None:
    """``parse_submission``'s field list, under the form's field names."""
    if error.code == "unknown_queue":
        errors.setdefault("queue", error.message)
        return
    fields = (error.details or {}).get("fields", [])
    for item in fields if isinstance(fields, list) else []:
        raw = str(item.get("field", ""))
        name = next((form for api, form in FORM_FIELDS.items() if raw.startswith(api)), "_form")
        errors.setdefault(name, str(item.get("message", error.message)))
    if not fields:
        errors.setdefault("_form", error.message)


# ------------------------------------------------------------------ dead letters


@fragments.get("/dlq")
@hide
@requires(Scope.READ)
async def dlq_fragment() -> Response:
    """The dead-letter table (filters and paging from the query string)."""
    return _html(await render_template("_dlq_table.html", **await dlq_table(request.args)))


@fragments.post("/dlq/<task_id>/replay")
@hide
@requires(Scope.ADMIN)
async def replay_one(task_id: str) -> Response:
    """Replay one dead letter, with the payload as edited (only if it changed) and a reason;
    the row comes back saying so. A payload that is not a JSON object, or a job that is no
    longer a dead letter: the row again with the error (``X-Form-Invalid: true``), nothing
    replayed."""
    runtime = current_state().runtime
    jid = job_id(task_id)
    job = await runtime.get(jid)
    form = await request.form
    text = form.get("payload") or ""
    errors: dict[str, str] = {}
    payload = _payload(text, errors)
    if payload is None:
        return await _row(job, errors["payload"], error=True, payload_text=text, invalid=True)
    reason = (form.get("reason") or "").strip()[:500] or None
    request_ = ReplayRequest(
        by=current_caller().who,
        reason=reason,
        payload=payload if payload != job.payload else None,
    )
    replayed = await runtime.replay(jid, request_)
    if replayed is None:
        return await _row(job, "This job is no longer a dead letter.", error=True, invalid=True)
    changed = " with the corrected payload" if request_.payload is not None else ""
    return await _row(replayed, f"Replayed{changed}: pending again.")


async def _row(
    job: Job,
    message: str,
    *,
    error: bool = False,
    payload_text: str | None = None,
    invalid: bool = False,
) -> Response:
    body = await render_template(
        "_dlq_row.html", job=job, row_message=message, row_error=error, payload_text=payload_text
    )
    return _refused(body) if invalid else _html(body)


@fragments.post("/dlq/replay")
@hide
@requires(Scope.ADMIN)
async def replay_matching() -> Response:
    """Replay every dead letter matching the filters (those dead now), then the table."""
    query = _dead_query(request.args)
    replay = ReplayRequest(by=current_caller().who, reason="replayed from the dead letters page")
    count = await current_state().runtime.replay_all(query, replay)
    message = f"Replayed {count} dead letter{'' if count == 1 else 's'}."
    return _html(await render_template("_dlq_table.html", **await dlq_table(request.args, message)))


@fragments.post("/dlq/purge")
@hide
@requires(Scope.ADMIN)
async def purge_matching() -> Response:
    """Delete every dead letter matching the filters (with their logs), then the table."""
    count = await current_state().runtime.purge_dead_letters(_dead_query(request.args))
    message = f"Purged {count} dead letter{'' if count == 1 else 's'}."
    return _html(await render_template("_dlq_table.html", **await dlq_table(request.args, message)))


def _dead_query(args: MultiDict[str, str]) -> DeadLetterQuery:
    """The filters of a bulk action; a filter that does not parse is a 422 (nothing is
    replayed or purged on a guess)."""
    return parse_dead_letter_query(args, paged=False)
