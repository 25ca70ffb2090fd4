"""API keys over the API (``admin``): create (the key is in this answer only), list, revoke,
and retention on demand (``POST /api/v1/cleanup``)."""

from __future__ import annotations

from quart import Blueprint, Response, request
from quart_schema import document_querystring, document_request
from quart_schema import document_response as documented

from taskflow.keys import Scope, parse_scopes
from web.api import API_PREFIX, errors
from web.auth import requires
from web.dlq_parsing import parse_flag
from web.parsing import decode_json, is_json
from web.responses import ApiError, json_response, validation_error
from web.schemas import (
    CleanupResponse,
    KeyCreated,
    KeyCreateRequest,
    KeyList,
    KeyOut,
    KeysQuery,
    key_out,
    timestamp,
)
from web.state import current_state

keys = Blueprint("keys", __name__, url_prefix=API_PREFIX)


@keys.post("/keys")
@requires(Scope.ADMIN)
@document_request(KeyCreateRequest)
@documented(KeyCreated, 201)
@errors(401, 403, 409, 415, 422, 429, 503)
async def create_key() -> Response:
    """Create an API key; the answer holds the key, which is never shown again (the store
    keeps its SHA-256). 409 ``key_exists`` if a live key has the name."""
    if not is_json(request.mimetype):
        raise ApiError(
            415,
            "unsupported_media_type",
            "The request body must be JSON (Content-Type: application/json).",
        )
    body = await request.get_data(cache=False)
    assert isinstance(body, bytes)
    raw = decode_json(body)
    if not isinstance(raw, dict):
        raise validation_error([{"field": "", "message": "expected an object"}])
    unknown = sorted(set(raw) - {"name", "scopes"})
    if unknown:
        raise validation_error([{"field": f, "message": "unknown field"} for f in unknown])
    name, scopes = raw.get("name"), raw.get("scopes")
    if not isinstance(name, str):
        raise validation_error([{"field": "name", "message": "required, a string"}])
    if not isinstance(scopes, (str, list)) or not all(isinstance(s, str) for s in scopes):
        raise validation_error(
            [{"field": "scopes", "message": 'required: a list such as ["read", "submit"]'}]
        )
    parse_scopes(scopes)  # ValidationError -> 422 before anything is stored
    key, secret = await current_state().runtime.create_key(name, scopes)
    created = KeyCreated(
        name=key.name,
        scopes=sorted(s.value for s in key.scopes),
        created_at=timestamp(key.created_at),
        key=secret,
    )
    return json_response(created, 201, {"Cache-Control": "no-store"})


@keys.get("/keys")
@requires(Scope.ADMIN)
@document_querystring(KeysQuery)
@documented(KeyList, 200)
@errors(401, 403, 422, 429, 503)
async def list_keys() -> Response:
    """Every live key by name (``revoked=true``: the revoked ones too, after them)."""
    found = await current_state().runtime.list_keys(revoked=parse_flag(request.args, "revoked"))
    return json_response(KeyList(keys=[key_out(k) for k in found]))


@keys.delete("/keys/<name>")
@requires(Scope.ADMIN)
@documented(KeyOut, 200)
@errors(401, 403, 404, 429, 503)
async def revoke_key(name: str) -> Response:
    """Revoke the live key ``name``: every API process refuses it within 5 s (this one at
    once). 404 ``key_not_found`` if no live key has the name."""
    state = current_state()
    key = await state.runtime.revoke_key(name)
    state.auth.keys.forget()
    return json_response(key_out(key))


@keys.post("/cleanup")
@requires(Scope.ADMIN)
@documented(CleanupResponse, 200)
@errors(401, 403, 429, 503)
async def cleanup() -> Response:
    """Retention now: delete every terminal job past its retention (completed after
    ``TASKFLOW_RETENTION_COMPLETED``, failed after ``TASKFLOW_RETENTION_FAILED``), with its
    log, as the reaper does every sweep."""
    return json_response(CleanupResponse(deleted=await current_state().runtime.cleanup()))
