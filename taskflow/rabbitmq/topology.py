"""The transport's names and declarations on the broker, all under one prefix.

```
<prefix>.jobs   direct exchange, routing key = queue name        (publish, mandatory)
<prefix>.<q>    durable queue per queue name q, bound to .jobs with key q
                  classic: x-max-priority 9, x-dead-letter-exchange <prefix>.dlx
                  quorum:  x-queue-type quorum, x-dead-letter-exchange <prefix>.dlx
                           (no priorities: quorum queues reject x-max-priority on 3.x)
<prefix>.dlx    fanout exchange receiving what consumers reject (nack, requeue=False)
<prefix>.dead   durable queue bound to .dlx: the dead letters, kept for inspection
```

Declarations are idempotent; a declare whose arguments differ from the existing queue's
fails with PRECONDITION_FAILED and closes its channel, so each batch of declarations runs
on a short-lived channel of its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import aiormq.abc
import anyio

from taskflow import limits

MAX_PRIORITY = limits.MAX_PRIORITY


@dataclass(frozen=True, slots=True, kw_only=True)
class Topology:
    prefix: str = "taskflow"
    quorum: bool = False

    def queue(self, name: str) -> str:
        """The broker queue for the transport queue ``name``."""
        return f"{self.prefix}.{name}"

    @property
    def jobs_exchange(self) -> str:
        return f"{self.prefix}.jobs"

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.prefix}.dlx"

    @property
    def dead_queue(self) -> str:
        return f"{self.prefix}.dead"

    @property
    def events_exchange(self) -> str:
        return f"{self.prefix}.events"

    def queue_arguments(self) -> dict[str, Any]:
        if self.quorum:
            return {"x-queue-type": "quorum", "x-dead-letter-exchange": self.dead_letter_exchange}
        return {"x-max-priority": MAX_PRIORITY, "x-dead-letter-exchange": self.dead_letter_exchange}

    async def declare_base(self, channel: aiormq.abc.AbstractChannel, *, timeout: float) -> None:
        """The jobs exchange, the dead-letter exchange and the dead-letter queue."""
        dead_arguments: dict[str, Any] | None = {"x-queue-type": "quorum"} if self.quorum else None
        with anyio.fail_after(timeout):
            await channel.exchange_declare(self.jobs_exchange, exchange_type="direct", durable=True)
            await channel.exchange_declare(
                self.dead_letter_exchange, exchange_type="fanout", durable=True
            )
            await channel.queue_declare(self.dead_queue, durable=True, arguments=dead_arguments)
            await channel.queue_bind(self.dead_queue, self.dead_letter_exchange, routing_key="")

    async def declare_queues(
        self, channel: aiormq.abc.AbstractChannel, names: Iterable[str], *, timeout: float
    ) -> None:
        arguments = self.queue_arguments()
        for name in names:
            with anyio.fail_after(timeout):
                await channel.queue_declare(self.queue(name), durable=True, arguments=arguments)
                await channel.queue_bind(self.queue(name), self.jobs_exchange, routing_key=name)
