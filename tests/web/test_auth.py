"""API keys: 401 vs 403 with the envelope and WWW-Authenticate, scopes per route, keys over
the API, revocation, and the OpenAPI document's bearer scheme (memory and PostgreSQL)."""

from __future__ import annotations

import dataclasses
from typing import Any

import anyio
import pytest
from quart import Quart

from actors.runtime import Runtime
from taskflow.config import Settings
from tests.web.helpers import Client, assert_error
from web.app import create_app

pytestmark = pytest.mark.anyio


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, auth="required")


async def make_key(runtime: Runtime, name: str, scopes: str) -> dict[str, str]:
    _, secret = await runtime.create_key(name, scopes.split(","))
    return {"Authorization": f"Bearer {secret}"}


def job_body(task: str = "echo") -> dict[str, Any]:
    return {"task_type": task, "data": [{"payload": {"x": 1}}]}


async def test_no_key_is_401_with_a_challenge(client: Client) -> None:
    for method, path in [
        ("GET", "/api/v1/jobs"),
        ("POST", "/api/v1/jobs"),
        ("GET", "/api/v1/metrics"),
        ("GET", "/metrics"),
        ("GET", "/api/v1/dlq"),
        ("DELETE", "/api/v1/dlq?all=true"),
        ("GET", "/api/v1/keys"),
    ]:
        response = await client.open(path, method=method, json=job_body())
        body = await assert_error(response, 401, "unauthorized")
        assert response.headers["WWW-Authenticate"].startswith("Bearer realm="), path
        assert body["error"]["details"]["required_scope"] in {"read", "submit", "admin"}


async def test_unknown_malformed_and_other_scheme_keys_are_401(client: Client) -> None:
    for header in (
        "Bearer tf_nope",
        "Bearer ",
        "Basic dXNlcjpwdw==",
        "tf_raw",
        "Bearer " + "x" * 300,
    ):
        response = await client.get("/api/v1/jobs", headers={"Authorization": header})
        await assert_error(response, 401, "unauthorized")
    response = await client.get("/api/v1/jobs", headers={"Authorization": "Bearer tf_nope"})
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


async def test_health_and_the_api_description_stay_open(client: Client) -> None:
    assert (await client.get("/api/v1/health")).status_code == 200
    assert (await client.get("/openapi.json")).status_code == 200
    assert (await client.get("/docs")).status_code == 200
    assert (await client.get("/redoc")).status_code == 200


async def test_each_scope_opens_its_routes_only(client: Client, runtime: Runtime) -> None:
    read = await make_key(runtime, "reader", "read")
    submit = await make_key(runtime, "submitter", "submit")
    admin = await make_key(runtime, "root", "admin")

    assert (await client.get("/api/v1/jobs", headers=read)).status_code == 200
    response = await client.post("/api/v1/jobs", json=job_body(), headers=read)
    body = await assert_error(response, 403, "forbidden")
    assert body["error"]["details"] == {"required_scope": "submit", "key_scopes": ["read"]}
    assert 'error="insufficient_scope", scope="submit"' in response.headers["WWW-Authenticate"]

    response = await client.post("/api/v1/jobs", json=job_body("sleep"), headers=submit)
    assert response.status_code == 202
    job_id = (await response.get_json())["taskIds"][0]
    # submit does not read: scopes are separate, only admin implies the others
    await assert_error(await client.get(f"/api/v1/jobs/{job_id}", headers=submit), 403, "forbidden")
    cancel = await client.post(f"/api/v1/jobs/{job_id}/cancel", headers=submit)
    assert cancel.status_code in (200, 409)
    for method, path in [
        ("POST", f"/api/v1/jobs/action/{job_id}/retry"),
        ("POST", "/api/v1/jobs/action/retry"),
        ("DELETE", "/api/v1/dlq?all=true"),
        ("GET", "/api/v1/keys"),
        ("POST", "/api/v1/cleanup"),
    ]:
        for key in (read, submit):
            await assert_error(
                await client.open(path, method=method, headers=key), 403, "forbidden"
            )

    assert (await client.get(f"/api/v1/jobs/{job_id}", headers=admin)).status_code == 200
    assert (await client.post("/api/v1/jobs", json=job_body(), headers=admin)).status_code == 202
    assert (await client.delete("/api/v1/dlq?all=true", headers=admin)).status_code == 200
    assert (await client.post("/api/v1/cleanup", headers=admin)).status_code == 200


async def test_a_replay_records_the_key_that_asked(client: Client, runtime: Runtime) -> None:
    admin = await make_key(runtime, "fixer", "admin")
    response = await client.post("/api/v1/jobs", json=job_body("fail"), headers=admin)
    job_id = (await response.get_json())["taskIds"][0]
    assert (await runtime.wait(job_id, timeout=10)).status.value == "failed"
    response = await client.post(
        f"/api/v1/jobs/action/{job_id}/retry", json={"reason": "fixed"}, headers=admin
    )
    assert response.status_code == 200, await response.get_data()
    assert (await response.get_json())["job"]["replays"][-1]["by"] == "key:fixer"


async def test_keys_over_the_api(client: Client, runtime: Runtime) -> None:
    admin = await make_key(runtime, "root", "admin")
    response = await client.post(
        "/api/v1/keys", json={"name": "ci-bot", "scopes": ["read", "submit"]}, headers=admin
    )
    assert response.status_code == 201, await response.get_data()
    created = await response.get_json()
    assert created["name"] == "ci-bot" and created["scopes"] == ["read", "submit"]
    assert created["key"].startswith("tf_") and len(created["key"]) > 40
    assert response.headers["Cache-Control"] == "no-store"
    bot = {"Authorization": f"Bearer {created['key']}"}
    assert (await client.post("/api/v1/jobs", json=job_body(), headers=bot)).status_code == 202

    listed = await (await client.get("/api/v1/keys", headers=admin)).get_json()
    assert [k["name"] for k in listed["keys"]] == ["ci-bot", "root"]
    assert created["key"] not in str(listed)
    assert all(
        set(k) == {"name", "scopes", "createdAt", "revokedAt", "active"} for k in listed["keys"]
    )

    again = await client.post(
        "/api/v1/keys", json={"name": "ci-bot", "scopes": "read"}, headers=admin
    )
    await assert_error(again, 409, "key_exists")
    for bad in (
        {"name": "no spaces", "scopes": ["read"]},
        {"name": "x", "scopes": ["root"]},
        {"name": "x", "scopes": []},
        {"name": "x"},
        {"name": "x", "scopes": ["read"], "extra": 1},
        ["x"],
    ):
        response = await client.post("/api/v1/keys", json=bad, headers=admin)
        await assert_error(response, 422, "validation_error")

    revoked = await client.delete("/api/v1/keys/ci-bot", headers=admin)
    assert revoked.status_code == 200
    assert (await revoked.get_json())["active"] is False
    await assert_error(await client.get("/api/v1/jobs", headers=bot), 401, "unauthorized")
    await assert_error(
        await client.delete("/api/v1/keys/ci-bot", headers=admin), 404, "key_not_found"
    )
    listed = await (await client.get("/api/v1/keys?revoked=true", headers=admin)).get_json()
    assert [(k["name"], k["active"]) for k in listed["keys"]] == [("root", True), ("ci-bot", False)]


async def test_a_key_revoked_elsewhere_stops_working_within_5_seconds(
    client: Client, runtime: Runtime
) -> None:
    key = await make_key(runtime, "leaving", "read")
    assert (await client.get("/api/v1/jobs", headers=key)).status_code == 200  # now cached
    await runtime.revoke_key("leaving")  # as another process (or `taskflow keys`) would
    started = anyio.current_time()
    with anyio.fail_after(5):
        while True:
            if (await client.get("/api/v1/jobs", headers=key)).status_code == 401:
                break
            await anyio.sleep(0.1)
    assert anyio.current_time() - started < 5


async def test_openapi_declares_the_bearer_scheme_and_each_scope(client: Client) -> None:
    document = await (await client.get("/openapi.json")).get_json()
    scheme = document["components"]["securitySchemes"]["bearer"]
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    assert document["security"] == [{"bearer": []}]
    scopes = {
        (method, path): op["x-required-scope"]
        for path, item in document["paths"].items()
        for method, op in item.items()
    }
    assert scopes[("get", "/api/v1/health")] is None
    assert document["paths"]["/api/v1/health"]["get"]["security"] == []
    assert scopes[("post", "/api/v1/jobs")] == "submit"
    assert scopes[("post", "/api/v1/jobs/{task_id}/cancel")] == "submit"
    assert scopes[("get", "/api/v1/jobs/{task_id}")] == "read"
    assert scopes[("get", "/api/v1/logs/{task_id}")] == "read"
    assert scopes[("delete", "/api/v1/dlq")] == "admin"
    assert scopes[("post", "/api/v1/jobs/action/retry")] == "admin"
    assert scopes[("post", "/api/v1/keys")] == "admin"
    assert all(v is not None for k, v in scopes.items() if k[1] != "/api/v1/health")
    submit = document["paths"]["/api/v1/jobs"]["post"]
    assert {"401", "403", "429"} <= set(submit["responses"])


async def test_auth_off_needs_no_key(runtime: Runtime, settings: Settings) -> None:
    app: Quart = create_app(runtime, dataclasses.replace(settings, auth="off"))
    client = app.test_client()
    assert (await client.get("/api/v1/jobs")).status_code == 200
    assert (await client.post("/api/v1/jobs", json=job_body())).status_code == 202
