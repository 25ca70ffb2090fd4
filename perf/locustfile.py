"""Load tests of a running TaskFlow API (Locust, headless through `invoke load`).

    invoke load --users 50 --time 60s --host http://127.0.0.1:8000
    locust -f perf/locustfile.py --headless -u 50 -r 10 -t 60s --host http://127.0.0.1:8000

Three kinds of user, mixed by weight (pick some with ``--tags submit read dashboard`` or by
class name on the command line):

- ``Submitter`` (weight 3): single jobs, batches of 20, a delayed job, high priority,
  an idempotent retry of the same request (expects 200 ``Idempotent-Replayed``).
- ``Reader`` (weight 2): gets jobs it submitted, lists jobs by status, pages the DLQ.
- ``Dashboard`` (weight 1): polls metrics and health once a second, as a monitoring client
  without streams does (the Panel dashboard itself reads one metrics stream per process).

The tasks are the demo ones (``echo``, ``sleep``), so run the server with ``taskflow up``
or with ``TASKFLOW_DEMO=true`` (compose sets it). Any non-2xx answer counts as a failure,
except where a scenario expects it; Locust's CSV stats land where ``--csv`` points.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

from locust import FastHttpUser, between, tag, task

JSON = {"Content-Type": "application/json"}


def body(task_type: str, n: int = 1, **options: Any) -> dict[str, Any]:
    return {"task_type": task_type, "data": [{"payload": {"n": i}} for i in range(n)], **options}


class Submitter(FastHttpUser):
    weight = 3
    wait_time = between(0.0, 0.05)

    @tag("submit")
    @task(10)
    def submit_one(self) -> None:
        self.client.post("/api/v1/jobs", json=body("echo"), headers=JSON, name="submit 1")

    @tag("submit")
    @task(3)
    def submit_batch(self) -> None:
        self.client.post("/api/v1/jobs", json=body("echo", 20), headers=JSON, name="submit 20")

    @tag("submit")
    @task(1)
    def submit_delayed(self) -> None:
        self.client.post(
            "/api/v1/jobs", json=body("echo", delay_seconds=5), headers=JSON, name="submit delayed"
        )

    @tag("submit")
    @task(1)
    def submit_urgent(self) -> None:
        self.client.post(
            "/api/v1/jobs", json=body("sleep", priority=9), headers=JSON, name="submit priority"
        )

    @tag("submit")
    @task(1)
    def submit_idempotent(self) -> None:
        headers = {**JSON, "Idempotency-Key": uuid.uuid4().hex}
        request = body("echo")
        self.client.post("/api/v1/jobs", json=request, headers=headers, name="submit keyed")
        with self.client.post(
            "/api/v1/jobs",
            json=request,
            headers=headers,
            name="submit keyed again",
            catch_response=True,
        ) as response:
            if response.status_code != 200 or response.headers.get("Idempotent-Replayed") != "true":
                response.failure(f"expected a 200 replay, got {response.status_code}")


class Reader(FastHttpUser):
    weight = 2
    wait_time = between(0.0, 0.1)

    def on_start(self) -> None:
        response = self.client.post("/api/v1/jobs", json=body("echo", 20), headers=JSON)
        self.ids: list[str] = response.json()["taskIds"] if response.status_code == 202 else []

    @tag("read")
    @task(10)
    def get_job(self) -> None:
        if self.ids:
            self.client.get(f"/api/v1/jobs/{random.choice(self.ids)}", name="get job")

    @tag("read")
    @task(3)
    def list_jobs(self) -> None:
        status = random.choice(["pending", "in_progress", "completed", "failed"])
        self.client.get(f"/api/v1/jobs?status={status}&limit=50", name="list jobs")

    @tag("read")
    @task(1)
    def dlq(self) -> None:
        self.client.get("/api/v1/dlq?limit=20", name="dlq page")


class Dashboard(FastHttpUser):
    weight = 1
    wait_time = between(1.0, 1.0)

    @tag("dashboard")
    @task(3)
    def metrics(self) -> None:
        self.client.get("/api/v1/metrics", name="metrics")

    @tag("dashboard")
    @task(1)
    def health(self) -> None:
        self.client.get("/api/v1/health", name="health")
