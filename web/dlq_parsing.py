"""Parsing of the dead-letter routes: the shared filters, the replay body, switches.

The filters are the same for listing, replaying many and purging, so an operator checks what
a filter matches with ``GET /dlq`` (or ``?dry_run=true``) before acting on it.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from werkzeug.datastructures import MultiDict

from taskflow.limits import MAX_DEPTH
from taskflow.ports import DeadLetterQuery, ReplayRequest
from taskflow.storable import find_unstorable, text_problem
from web.parsing import depth, parse_cursor, parse_page, query_name, single_arg
from web.responses import ApiError, FieldErrors

MAX_TEXT = 200
"""``q`` is at most this many characters."""
MAX_REASON = 1000

FILTERS = ("task_type", "queue_name", "error_code", "since", "until", "q")
"""The filter parameters (each also accepted in camelCase where it has two words)."""


def parse_dead_letter_query(args: MultiDict[str, str], *, paged: bool = True) -> DeadLetterQuery:
    """``task_type``, ``queue_name``, ``error_code``, ``since``, ``until`` (ISO-8601 or epoch
    seconds), ``q`` (a job id, or text in the error message or type or the payload), and with
    ``paged``: ``limit``, ``offset`` and ``cursor``. The query asks for one row more than
    ``limit``, to tell whether a next page exists."""
    errors = FieldErrors()
    task = query_name(args, ("task_type", "taskType"), errors)
    queue = query_name(args, ("queue_name", "queueName"), errors)
    code = query_name(args, ("error_code", "errorCode"), errors)
    since = _time(args, "since", errors)
    until = _time(args, "until", errors)
    if since is not None and until is not None and since >= until:
        errors.add("until", "must be later than since")
    text = _text(args, errors)
    limit, offset, before = 500, 0, None
    if paged:
        page = parse_page(args, errors)
        limit, offset = page.limit + 1, page.offset
        before = parse_cursor(args, errors)
    errors.raise_if_any("The query string is invalid.")
    return DeadLetterQuery(
        task=task,
        queue=queue,
        error_code=code,
        since=since,
        until=until,
        text=text,
        limit=limit,
        offset=offset,
        before=before,
    )


def parse_flag(args: MultiDict[str, str], key: str) -> bool:
    """A boolean switch of the query string: ``true``/``1``/``yes`` or ``false``/``0``/``no``
    (absent: false). 422 ``validation_error`` for anything else."""
    errors = FieldErrors()
    raw = single_arg(args, key, errors)
    value = False
    if raw is not None:
        word = raw.strip().lower()
        if word in ("true", "1", "yes"):
            value = True
        elif word not in ("false", "0", "no", ""):
            errors.add(key, "must be true or false")
    errors.raise_if_any("The query string is invalid.")
    return value


def parse_replay_body(raw: Any, *, by: str | None) -> ReplayRequest:
    """The optional body of a replay: ``{"payload": {...}, "reason": "..."}``."""
    if raw is None:
        return ReplayRequest(by=by)
    if not isinstance(raw, dict):
        raise ApiError(422, "validation_error", "The body must be a JSON object.")
    errors = FieldErrors()
    for key in raw:
        if key not in ("payload", "reason"):
            errors.add(str(key), "is not a field of a replay (payload, reason)")
    payload = raw.get("payload")
    if payload is not None:
        if not isinstance(payload, dict):
            errors.add("payload", "must be a JSON object")
            payload = None
        elif depth(payload) > MAX_DEPTH:
            errors.add("payload", f"is nested deeper than {MAX_DEPTH} levels")
            payload = None
        elif (refused := find_unstorable(payload)) is not None:
            errors.add(refused.where, refused.why)
            payload = None
    reason = raw.get("reason")
    if reason is not None:
        if not isinstance(reason, str):
            errors.add("reason", "must be a string")
            reason = None
        elif len(reason) > MAX_REASON:
            errors.add("reason", f"must be at most {MAX_REASON} characters")
            reason = None
        elif text_problem(reason):
            errors.add("reason", text_problem(reason) or "")
            reason = None
    errors.raise_if_any("The replay request is invalid.")
    return ReplayRequest(by=by, reason=reason, payload=payload)


def _time(args: MultiDict[str, str], key: str, errors: FieldErrors) -> float | None:
    raw = single_arg(args, key, errors)
    if raw is None or not raw.strip():
        return None
    text = raw.strip()
    try:
        value = float(text)
    except ValueError:
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            errors.add(key, "must be an ISO-8601 time or seconds since the epoch")
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        value = moment.timestamp()
    if not math.isfinite(value) or not 0 <= value < 253402300800:  # up to year 9999
        errors.add(key, "is out of range")
        return None
    return value


def _text(args: MultiDict[str, str], errors: FieldErrors) -> str | None:
    raw = single_arg(args, "q", errors)
    if raw is None or not raw.strip():
        return None
    text = raw.strip()
    if len(text) > MAX_TEXT:
        errors.add("q", f"must be at most {MAX_TEXT} characters")
        return None
    problem = text_problem(text)
    if problem:
        errors.add("q", problem)
        return None
    return text


MAX_REPLAY_LIMIT = 100_000


def parse_limit(args: MultiDict[str, str]) -> int | None:
    """``limit`` of a bulk replay: at most this many in this call (1..100000; absent: all)."""
    errors = FieldErrors()
    raw = single_arg(args, "limit", errors)
    value: int | None = None
    if raw is not None:
        try:
            value = int(raw.strip())
        except ValueError:
            value = 0
        if not 1 <= value <= MAX_REPLAY_LIMIT:
            errors.add("limit", f"must be an integer from 1 to {MAX_REPLAY_LIMIT}")
    errors.raise_if_any("The query string is invalid.")
    return value
