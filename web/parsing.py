"""Request parsing and validation: bodies, query strings, ids, cursors.

Each function raises ``ApiError`` with the API's codes; validation errors list every bad
field in ``details.fields`` as ``{"field", "message"}``, naming the field as the client sent it.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from werkzeug.datastructures import MultiDict

from taskflow.jobs import JobStatus
from taskflow.limits import (
    DEFAULT_PAGE,
    MAX_ATTEMPTS,
    MAX_DELAY_SECONDS,
    MAX_DEPTH,
    MAX_IDEMPOTENCY_KEY,
    MAX_NAME,
    MAX_OFFSET,
    MAX_PRIORITY,
    MAX_TIMEOUT_SECONDS,
    MAX_WAIT_SECONDS,
    MIN_PRIORITY,
)
from taskflow.limits import MAX_PAGE as MAX_LIMIT
from taskflow.messages import NewJob
from taskflow.ports import JobQuery
from taskflow.storable import find_unstorable, text_problem
from web.responses import ApiError, FieldErrors

SUBMIT_FIELDS: Mapping[str, str] = {
    "task_type": "taskType",
    "queue_name": "queueName",
    "data": "data",
    "priority": "priority",
    "delay_seconds": "delaySeconds",
    "max_attempts": "maxAttempts",
    "timeout_seconds": "timeoutSeconds",
}
_ALIASES = {camel: snake for snake, camel in SUBMIT_FIELDS.items()} | {
    snake: snake for snake in SUBMIT_FIELDS
}


# ------------------------------------------------------------------ bodies


def is_json(mimetype: str) -> bool:
    return mimetype == "application/json" or (
        mimetype.startswith("application/") and mimetype.endswith("+json")
    )


def decode_json(body: bytes) -> Any:
    """The JSON document in ``body``; 400 ``invalid_json`` if it is not UTF-8 JSON."""
    try:
        return msgspec.json.decode(body)
    except UnicodeDecodeError:
        reason = "it is not valid UTF-8"
    except RecursionError:
        reason = "it is nested too deeply"
    except msgspec.MsgspecError as exc:
        reason = str(exc)
        # msgspec refuses a lone surrogate escape (``"\ud800"``), which is valid JSON text:
        # read it with the standard parser so the field that holds it gets a clear 422.
        lenient = _lenient_json(body)
        if lenient is not None:
            return lenient
    raise ApiError(400, "invalid_json", f"The request body is not valid JSON: {reason}.")


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def _lenient_json(body: bytes) -> Any | None:
    try:
        return json.loads(body.decode("utf-8"), parse_constant=_not_json)
    except (ValueError, RecursionError):
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class Submission:
    """A valid ``POST /jobs`` body, as the runtime's ``NewJob``s."""

    jobs: list[NewJob]
    queue: str | None
    delayed: bool


def parse_submission(raw: Any, *, max_batch: int, queues: Sequence[str]) -> Submission:
    """Validate a submission body (snake_case or camelCase keys).

    Raises ``ApiError``: 422 ``validation_error`` listing every bad field, 413
    ``batch_too_large`` for more than ``max_batch`` items, 422 ``unknown_queue``.
    """
    if not isinstance(raw, dict):
        raise ApiError(
            422,
            "validation_error",
            "The request body must be a JSON object.",
            details={"fields": [{"field": "(body)", "message": "must be a JSON object"}]},
        )
    errors = FieldErrors()
    values: dict[str, Any] = {}
    names: dict[str, str] = {}  # canonical -> as sent
    for key, value in raw.items():
        canonical = _ALIASES.get(key)
        if canonical is None:
            errors.add(key, "unknown field")
        elif canonical in values:
            errors.add(key, f"given twice (as {names[canonical]!r} and {key!r})")
        else:
            values[canonical] = value
            names[canonical] = key

    def name(canonical: str) -> str:
        return names.get(canonical, canonical)

    data = values.get("data")
    if isinstance(data, list) and len(data) > max_batch:
        raise ApiError(
            413,
            "batch_too_large",
            f"A batch holds at most {max_batch} jobs; this one has {len(data)}.",
            details={"max_batch": max_batch, "size": len(data)},
        )

    task = _name_field(values, "task_type", name("task_type"), errors, required=True)
    queue = _name_field(values, "queue_name", name("queue_name"), errors, required=False)
    payloads = _payloads(data, name("data"), errors, present="data" in values)
    priority = _int_field(
        values.get("priority"), name("priority"), MIN_PRIORITY, MAX_PRIORITY, errors
    )
    max_attempts = _int_field(
        values.get("max_attempts"), name("max_attempts"), 1, MAX_ATTEMPTS, errors
    )
    delay = _number_field(
        values.get("delay_seconds"), name("delay_seconds"), errors, low=0.0, high=MAX_DELAY_SECONDS
    )
    timeout = _number_field(
        values.get("timeout_seconds"),
        name("timeout_seconds"),
        errors,
        low=0.0,
        high=MAX_TIMEOUT_SECONDS,
        exclusive_low=True,
    )
    errors.raise_if_any()
    assert task is not None
    if queue is not None and queue not in queues:
        raise ApiError(
            422,
            "unknown_queue",
            f"No queue named {queue!r}.",
            details={"queue": queue, "queues": list(queues)},
        )
    jobs = [
        NewJob(
            task=task,
            payload=payload,
            queue=queue,
            priority=priority,
            delay=delay or 0.0,
            max_attempts=max_attempts,
            timeout=timeout,
        )
        for payload in payloads
    ]
    return Submission(jobs=jobs, queue=queue, delayed=bool(delay))


def _name_field(
    values: Mapping[str, Any], key: str, shown: str, errors: FieldErrors, *, required: bool
) -> str | None:
    value = values.get(key)
    if value is None:
        if required:
            errors.add(shown, "is required")
        return None
    if not isinstance(value, str):
        errors.add(shown, "must be a string")
        return None
    value = value.strip()
    if not value:
        if required:
            errors.add(shown, "must not be empty")
        return None
    if len(value) > MAX_NAME:
        errors.add(shown, f"must be at most {MAX_NAME} characters")
        return None
    return value


def _payloads(data: Any, shown: str, errors: FieldErrors, *, present: bool) -> list[dict[str, Any]]:
    if not present or data is None:
        errors.add(shown, "is required")
        return []
    if not isinstance(data, list):
        errors.add(shown, 'must be a list of {"payload": {...}} items')
        return []
    if not data:
        errors.add(shown, "must hold at least one item")
        return []
    payloads: list[dict[str, Any]] = []
    for index, item in enumerate(data):
        where = f"{shown}[{index}]"
        if not isinstance(item, dict):
            errors.add(where, "must be an object with a payload")
            continue
        extra = sorted(set(item) - {"payload"})
        if extra:
            errors.add(where, f"unknown field(s): {', '.join(extra)}")
        payload = item.get("payload")
        if not isinstance(payload, dict):
            errors.add(f"{where}.payload", "is required and must be an object")
            continue
        if depth(payload) > MAX_DEPTH:
            errors.add(f"{where}.payload", f"is nested deeper than {MAX_DEPTH} levels")
            continue
        refused = find_unstorable(payload, f"{where}.payload")
        if refused is not None:
            errors.add(refused.where, refused.why)
            continue
        payloads.append(payload)
    return payloads


def _int_field(value: Any, shown: str, low: int, high: int, errors: FieldErrors) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        errors.add(shown, "must be an integer")
        return None
    if not low <= value <= high:
        errors.add(shown, f"must be between {low} and {high}")
        return None
    return value


def _number_field(
    value: Any,
    shown: str,
    errors: FieldErrors,
    *,
    low: float,
    high: float,
    exclusive_low: bool = False,
) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        errors.add(shown, "must be a number")
        return None
    number = float(value)
    too_low = number <= low if exclusive_low else number < low
    if too_low or number > high:
        bound = ">" if exclusive_low else ">="
        errors.add(shown, f"must be {bound} {low:g} and <= {high:g}")
        return None
    return number


def depth(value: Any) -> int:
    """How deeply ``value`` nests lists and dicts (a scalar is 0), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest


# ------------------------------------------------------------------ headers, ids


def idempotency_key(value: str | None) -> str | None:
    if value is None:
        return None
    if not 0 < len(value) <= MAX_IDEMPOTENCY_KEY or any(not 0x20 <= ord(ch) < 0x7F for ch in value):
        raise ApiError(
            422,
            "validation_error",
            "The Idempotency-Key header is invalid.",
            details={
                "fields": [
                    {
                        "field": "Idempotency-Key",
                        "message": f"must be 1..{MAX_IDEMPOTENCY_KEY} printable ASCII characters",
                    }
                ]
            },
        )
    return value


def job_id(value: str) -> str:
    """The canonical form of a job id (a UUID); 422 ``invalid_id`` otherwise."""
    try:
        if len(value) > 64:
            raise ValueError(value)
        return str(uuid.UUID(value))
    except ValueError:
        raise ApiError(
            422,
            "invalid_id",
            "A job id is a UUID.",
            details={"fields": [{"field": "task_id", "message": "must be a UUID"}]},
        ) from None


# ------------------------------------------------------------------ query strings


def single_arg(args: MultiDict[str, str], key: str, errors: FieldErrors) -> str | None:
    values = args.getlist(key)
    if len(values) > 1:
        errors.add(key, "given more than once")
        return None
    return values[0] if values else None


def _query_int(
    args: MultiDict[str, str], key: str, default: int, low: int, high: int, errors: FieldErrors
) -> int:
    raw = single_arg(args, key, errors)
    if raw is None:
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        errors.add(key, "must be an integer")
        return default
    if not low <= value <= high:
        errors.add(key, f"must be between {low} and {high}")
        return default
    return value


def query_name(args: MultiDict[str, str], keys: tuple[str, ...], errors: FieldErrors) -> str | None:
    """A name given under one of ``keys`` (aliases; giving two is an error)."""
    given = [k for k in keys if k in args]
    if len(given) > 1:
        errors.add(given[1], f"given twice (as {given[0]!r} and {given[1]!r})")
        return None
    if not given:
        return None
    raw = single_arg(args, given[0], errors)
    if raw is None or not raw.strip():
        return None
    if len(raw) > MAX_NAME:
        errors.add(given[0], f"must be at most {MAX_NAME} characters")
        return None
    problem = text_problem(raw)
    if problem:
        errors.add(given[0], problem)
        return None
    return raw.strip()


@dataclass(frozen=True, slots=True, kw_only=True)
class Page:
    limit: int
    offset: int


def parse_page(args: MultiDict[str, str], errors: FieldErrors | None = None) -> Page:
    own = errors is None
    errors = errors if errors is not None else FieldErrors()
    limit = _query_int(args, "limit", DEFAULT_PAGE, 1, MAX_LIMIT, errors)
    offset = _query_int(args, "offset", 0, 0, MAX_OFFSET, errors)
    if own:
        errors.raise_if_any("The query string is invalid.")
    return Page(limit=limit, offset=offset)


def parse_wait(args: MultiDict[str, str]) -> float | None:
    """``wait`` of ``GET /jobs/{id}``: seconds to hold the answer until the job is terminal,
    0 < wait <= 60 (fractions allowed); None when absent. 422 ``validation_error`` otherwise."""
    errors = FieldErrors()
    raw = single_arg(args, "wait", errors)
    value: float | None = None
    if raw is not None:
        try:
            value = float(raw.strip())
        except ValueError:
            errors.add("wait", "must be a number of seconds")
        else:
            if not 0 < value <= MAX_WAIT_SECONDS:  # NaN fails this too
                errors.add("wait", f"must be more than 0 and at most {MAX_WAIT_SECONDS}")
                value = None
    errors.raise_if_any("The query string is invalid.")
    return value


def parse_status(args: MultiDict[str, str], errors: FieldErrors) -> JobStatus | None:
    """``status``: one ``JobStatus`` value, or none."""
    raw = single_arg(args, "status", errors)
    if not raw:
        return None
    try:
        return JobStatus(raw.strip())
    except ValueError:
        errors.add("status", f"must be one of {', '.join(s.value for s in JobStatus)}")
        return None


def parse_job_query(args: MultiDict[str, str]) -> JobQuery:
    """``status``, ``task_type``, ``queue_name``, ``limit`` (1..500), ``offset``, ``cursor``.

    The query asks for one row more than ``limit``, to tell whether a next page exists.
    """
    errors = FieldErrors()
    page = parse_page(args, errors)
    status = parse_status(args, errors)
    task = query_name(args, ("task_type", "taskType"), errors)
    queue = query_name(args, ("queue_name", "queueName"), errors)
    before = parse_cursor(args, errors)
    errors.raise_if_any("The query string is invalid.")
    return JobQuery(
        status=status,
        task=task,
        queue=queue,
        limit=page.limit + 1,
        offset=page.offset,
        before=before,
    )


def parse_cursor(args: MultiDict[str, str], errors: FieldErrors) -> tuple[float, str] | None:
    """``cursor``: the keyset position a page's ``nextCursor`` stands for (None if absent)."""
    raw = single_arg(args, "cursor", errors)
    if not raw:
        return None
    before = decode_cursor(raw)
    if before is None:
        errors.add("cursor", "is not a cursor this API returned")
    return before


def encode_cursor(created_at: float, job_id: str) -> str:
    raw = msgspec.json.encode([created_at, job_id])
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(text: str) -> tuple[float, str] | None:
    """The ``(created_at, id)`` a cursor stands for; ``None`` if it is not one of ours."""
    if len(text) > 200:
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        value = msgspec.json.decode(raw, type=tuple[float, str])
    except (binascii.Error, ValueError, msgspec.MsgspecError):
        return None
    created_at, last_id = value
    if not math.isfinite(created_at) or not last_id or len(last_id) > 64:
        return None
    try:
        last_id = str(uuid.UUID(last_id))
    except ValueError:
        return None
    return created_at, last_id
