"""The wire codec: every message type round-trips; malformed input is a DecodeError."""

from __future__ import annotations

import pytest

from taskflow import codec
from taskflow.jobs import Job, JobError, JobStatus
from taskflow.messages import (
    ALL_MESSAGE_TYPES,
    AttemptCancelled,
    AttemptFailed,
    AttemptSucceeded,
    CancelRequested,
    DeadLetterJob,
    JobCancelled,
    JobDeadLettered,
    JobFailed,
    JobMessage,
    JobProgressed,
    JobReplayed,
    JobScheduled,
    JobStarted,
    JobSubmitted,
    JobSucceeded,
    Message,
    NewJob,
    RunJob,
    SubmitJobs,
    WorkerHeartbeat,
)

T0 = 1_717_171_717.25
ERROR = JobError(
    code="task_error",
    message="ValueError: width must be positive",
    type="builtins.ValueError",
    reason=None,
)
FAILED = AttemptFailed(
    job_id="job-7",
    task="resize",
    attempt=3,
    max_attempts=3,
    at=T0 + 9.5,
    started_at=T0 + 8.0,
    error=ERROR,
    error_types=("ValueError", "builtins.ValueError"),
    retryable=False,
    retry_delay=None,
    delivery_tag=42,
    log_lines=("INFO resizing width=-1", "ERROR failed"),
)
RUNNING_JOB = Job(
    id="job-7",
    task="resize",
    payload={"image": "s3://bucket/cat.png", "sizes": [64, 128], "opts": {"keep_ratio": True}},
    queue="images",
    status=JobStatus.IN_PROGRESS,
    priority=5,
    attempts=2,
    max_attempts=5,
    timeout=30.0,
    created_at=T0,
    updated_at=T0 + 3.0,
    run_at=T0 + 1.0,
    started_at=T0 + 2.0,
    result=None,
    error=JobError(code="timeout", message="attempt timed out after 30.0 s"),
    progress=42.5,
    progress_message="resized 64px",
    idempotency_key="req-123",
    lease_owner="worker-a:1234",
    lease_expires_at=T0 + 17.0,
    cancel_requested=False,
    replay_count=1,
    original_error=JobError(
        code="task_error", message="boom", type="builtins.KeyError", reason="non_retryable"
    ),
)

SAMPLES: list[Message] = [
    NewJob(
        task="resize",
        payload={"image": "cat.png", "width": 64},
        queue="images",
        priority=3,
        delay=2.5,
        max_attempts=5,
        timeout=30.0,
    ),
    SubmitJobs(
        jobs=(NewJob(task="resize", payload={"width": 64}), NewJob(task="email", queue="mail")),
        idempotency_key="req-123",
        request_hash="sha256:ab12",
    ),
    JobMessage(job_id="job-7", task="resize", queue="images", priority=5),
    RunJob(job=RUNNING_JOB, delivery_tag=42),
    DeadLetterJob(failure=FAILED, code="non_retryable"),
    CancelRequested(job_id="job-7"),
    JobSubmitted(job_id="job-7", task="resize", queue="images", at=T0, scheduled=True),
    JobStarted(job_id="job-7", task="resize", attempt=1, at=T0 + 2.0, queued_at=T0),
    JobProgressed(job_id="job-7", attempt=1, percent=42.5, message="resized 64px", at=T0 + 3.0),
    AttemptSucceeded(
        job_id="job-7",
        task="resize",
        attempt=2,
        at=T0 + 5.0,
        started_at=T0 + 2.0,
        created_at=T0,
        result={"urls": ["s3://bucket/cat-64.png"], "bytes": 2048, "ok": True, "note": None},
        result_bytes=77,
        delivery_tag=42,
        log_lines=("INFO resizing",),
    ),
    FAILED,
    AttemptCancelled(job_id="job-7", task="resize", attempt=1, at=T0 + 4.0, delivery_tag=9),
    JobSucceeded(
        job_id="job-7",
        task="resize",
        attempt=2,
        at=T0 + 5.0,
        started_at=T0 + 2.0,
        created_at=T0,
        result={"urls": ["s3://bucket/cat-64.png"], "bytes": 2048, "ok": True, "note": None},
    ),
    JobFailed(
        job_id="job-7",
        task="resize",
        attempt=3,
        max_attempts=3,
        at=T0 + 9.5,
        started_at=T0 + 8.0,
        error=ERROR,
        will_retry=False,
    ),
    JobCancelled(job_id="job-7", task="resize", attempt=1, at=T0 + 4.0),
    JobScheduled(job_id="job-7", attempt=1, run_at=T0 + 60.0, at=T0 + 5.0, error=ERROR),
    JobDeadLettered(
        job_id="job-7",
        task="resize",
        attempt=3,
        at=T0 + 10.0,
        error=JobError(code="task_error", message="boom", reason="max_attempts_exceeded"),
    ),
    JobReplayed(job_id="job-7", replay_count=2, at=T0 + 100.0),
    WorkerHeartbeat(
        worker_id="host-a:42",
        at=T0 + 101.0,
        interval=2.0,
        queues=("default", "images"),
        capacity=8,
        busy=3,
        started=120,
        finished=117,
    ),
]


def test_every_message_type_has_a_sample() -> None:
    sampled = [type(m) for m in SAMPLES]
    assert len(sampled) == len(set(sampled)), "one sample per type"
    assert set(sampled) == set(ALL_MESSAGE_TYPES)


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(message: Message) -> None:
    data = codec.encode(message)
    assert isinstance(data, bytes)
    decoded = codec.decode(data)
    assert type(decoded) is type(message)
    assert decoded == message


def test_nested_job_keeps_its_enum_and_errors() -> None:
    decoded = codec.decode(codec.encode(RunJob(job=RUNNING_JOB, delivery_tag=1)))
    assert isinstance(decoded, RunJob)
    assert decoded.job.status is JobStatus.IN_PROGRESS
    assert isinstance(decoded.job.error, JobError)
    assert decoded.job.error.code == "timeout"
    assert decoded.job.original_error == RUNNING_JOB.original_error
    assert decoded.job.payload["opts"] == {"keep_ratio": True}


def test_nested_failure_keeps_tuples() -> None:
    decoded = codec.decode(codec.encode(DeadLetterJob(failure=FAILED, code="non_retryable")))
    assert isinstance(decoded, DeadLetterJob)
    assert decoded.failure.error_types == ("ValueError", "builtins.ValueError")
    assert isinstance(decoded.failure.log_lines, tuple)
    assert decoded.failure.error == ERROR


VALID_BODY = b'{"job_id":"job-7","replay_count":1,"at":1.5}'


def test_valid_hand_written_envelope_decodes() -> None:
    # The malformed cases below differ from this one in one respect each.
    data = b'{"type":"JobReplayed","body":' + VALID_BODY + b"}"
    assert codec.decode(data) == JobReplayed(job_id="job-7", replay_count=1, at=1.5)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"not json", id="not-json"),
        pytest.param(b'{"type":"JobReplayed","body":', id="truncated"),
        pytest.param(b"\xff\xfe\x00", id="invalid-utf8-bytes"),
        pytest.param(
            b'{"type":"JobReplayed","body":{"job_id":"job-\xff","replay_count":1,"at":1.5}}',
            id="invalid-utf8-in-string",
        ),
        pytest.param(b'[{"type":"JobReplayed"}]', id="json-list"),
        pytest.param(b'"JobReplayed"', id="json-string"),
        pytest.param(b'{"type":"JobReplayed"}', id="missing-body"),
        pytest.param(b'{"body":' + VALID_BODY + b"}", id="missing-type"),
        pytest.param(b'{"type":"JobExploded","body":' + VALID_BODY + b"}", id="unknown-type"),
        pytest.param(
            b'{"type":"JobReplayed","body":{"job_id":7,"replay_count":1,"at":1.5}}',
            id="wrong-field-type",
        ),
        pytest.param(
            b'{"type":"JobReplayed","body":{"job_id":"j","replay_count":"1","at":1.5}}',
            id="string-for-int",
        ),
        pytest.param(b'{"type":"JobReplayed","body":[1,2,3]}', id="body-not-object"),
        pytest.param(
            b'{"type":"JobReplayed","body":{"replay_count":1,"at":1.5}}', id="missing-field"
        ),
        pytest.param(
            b'{"type":"RunJob","body":{"delivery_tag":1,'
            b'"job":{"id":"j","task":"t","status":"exploded"}}}',
            id="bad-nested-enum",
        ),
    ],
)
def test_malformed_input_raises_decode_error(data: bytes) -> None:
    with pytest.raises(codec.DecodeError) as info:
        codec.decode(data)
    assert info.value.code == "malformed_message"
    assert info.value.message


class Opaque:
    pass


@pytest.mark.parametrize(
    "value",
    [object(), Opaque(), 1 + 2j, {"when": object()}, [1, Opaque()]],
    ids=["object", "custom-class", "complex", "nested-in-dict", "nested-in-list"],
)
def test_encode_value_rejects_non_json(value: object) -> None:
    with pytest.raises(TypeError, match="unsupported"):
        codec.encode_value(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"a": [1, 2.5, None, True]}, b'{"a":[1,2.5,null,true]}'),
        ("text", b'"text"'),
        (None, b"null"),
    ],
)
def test_encode_value_encodes_json(value: object, expected: bytes) -> None:
    assert codec.encode_value(value) == expected


def test_many_messages_travel_as_one_array_and_come_back_in_order() -> None:
    from taskflow.codec import decode_many, encode, encode_many
    from taskflow.messages import CancelRequested

    messages = [CancelRequested(job_id=f"j{i}") for i in range(3)]
    assert decode_many(encode_many(messages)) == messages
    assert decode_many(encode(messages[0])) == messages[:1]  # a single envelope is accepted


@pytest.mark.parametrize(
    "body", [b"[1, 2]", b'[{"type": "Nope", "body": {}}]', b"[{", b"[\xff]"], ids=repr
)
def test_a_malformed_array_is_a_decode_error(body: bytes) -> None:
    from taskflow.codec import DecodeError, decode_many

    with pytest.raises(DecodeError):
        decode_many(body)
