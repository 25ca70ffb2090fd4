"""Scenario 2 of the fault suite: RabbitMQ `stop_app` for 5 s mid-run, then `start_app`."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.faults.streaming import check, run_through
from tests.rabbit import Vhost

pytestmark = [pytest.mark.timeout(300), pytest.mark.disruptive]

OUTAGE = 5.0


def test_rabbitmq_stopped_for_5_s_mid_run_loses_nothing(
    tmp_path: Path, pg_url: str, rabbit_vhost: Vhost, capsys: pytest.CaptureFixture[str]
) -> None:
    """Submissions go on while the broker is down: PostgreSQL still makes them durable, so
    they are accepted and the outbox publishes them once the broker is back. Workers lose
    their connection, reconnect with backoff, and every accepted job completes once."""

    def stop_broker_for_a_while() -> float:
        subprocess.run(["rabbitmqctl", "-q", "stop_app"], check=True, timeout=60)
        try:
            time.sleep(OUTAGE)
        finally:
            back = time.monotonic()
            subprocess.run(["rabbitmqctl", "-q", "start_app"], check=True, timeout=120)
        return back

    report = run_through(tmp_path, pg_url, rabbit_vhost, stop_broker_for_a_while)
    with capsys.disabled():
        print(report.line(f"rabbitmq stop_app {OUTAGE:.0f} s"))
    check(report)
