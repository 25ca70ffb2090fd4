"""The wire codec: msgspec JSON with a ``type`` tag, for every message type."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from taskflow.errors import TaskflowError
from taskflow.messages import ALL_MESSAGE_TYPES, Message

_BY_NAME: dict[str, type] = {cls.__name__: cls for cls in ALL_MESSAGE_TYPES}
_encoder = msgspec.json.Encoder()


class DecodeError(TaskflowError):
    """The message could not be decoded."""

    code = "malformed_message"


def encode(message: Message) -> bytes:
    return _encoder.encode({"type": type(message).__name__, "body": message})


def encode_many(messages: Sequence[Message]) -> bytes:
    """Several messages as one JSON array of ``encode`` envelopes (one AMQP message for a burst
    of events); ``decode_many`` reads it back."""
    return b"[" + b",".join(encode(m) for m in messages) + b"]"


def decode_many(data: bytes) -> list[Message]:
    """Decode ``encode_many`` (or a single ``encode``) output; ``DecodeError`` if malformed."""
    if data.lstrip()[:1] != b"[":
        return [decode(data)]
    try:
        items = msgspec.json.decode(data, type=list[msgspec.Raw])
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise DecodeError(f"not a JSON array of messages: {exc}") from exc
    return [decode(bytes(item)) for item in items]


def encode_value(value: Any) -> bytes:
    """Encode a task payload or result as JSON; raises ``TypeError`` for what msgspec cannot
    encode. (msgspec renders datetimes as ISO strings, bytes as base64, sets as arrays.)"""
    try:
        return _encoder.encode(value)
    except (TypeError, ValueError, msgspec.EncodeError) as exc:
        raise TypeError(str(exc)) from exc


def decode(data: bytes) -> Message:
    """Decode bytes made by ``encode``; anything else raises ``DecodeError`` with the reason."""
    try:
        envelope = msgspec.json.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise DecodeError(f"not JSON: {exc}") from exc
    if not isinstance(envelope, dict) or "type" not in envelope or "body" not in envelope:
        raise DecodeError("expected an object with 'type' and 'body'")
    cls = _BY_NAME.get(str(envelope["type"]))
    if cls is None:
        raise DecodeError(f"unknown message type {envelope['type']!r}")
    try:
        message: Message = msgspec.convert(envelope["body"], type=cls)
    except msgspec.ValidationError as exc:
        raise DecodeError(f"invalid {cls.__name__}: {exc}") from exc
    return message
