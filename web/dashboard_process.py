"""DashboardProcess: ``taskflow up --dashboard`` runs ``taskflow dashboard`` as a child.

The dashboard stays a process of its own (Panel and Bokeh never load into the API's loop or
memory); this child of the supervisor tree starts it once the API serves, points it at the
API's bound port, restarts it if it dies (a few times, with backoff, then leaves it dead
with an error line: the jobs go on without it), and stops it with the tree (SIGTERM, then
SIGKILL after 5 s).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from dataclasses import dataclass, field

import anyio
from anyio.abc import Process, TaskStatus

from taskflow.log import get_logger

log = get_logger("taskflow.dashboard")

MAX_STARTS = 5


@dataclass(kw_only=True)
class DashboardProcess:
    """Inputs: none. Outputs: a ``taskflow dashboard`` process serving
    ``http://host:port/dashboard`` with the metrics of ``api_url``. Restart: its own (see the
    module). State: the process."""

    api_url: str
    host: str
    port: int
    starts: int = field(default=0, init=False)

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "taskflow",
            "dashboard",
            "--api-url",
            self.api_url,
            "--host",
            self.host,
            "--port",
            str(self.port),
        ]

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        delay = 1.0
        while self.starts < MAX_STARTS:
            self.starts += 1
            process = await anyio.open_process(
                self.command(), stdin=subprocess.DEVNULL, stdout=None, stderr=None
            )
            log.info("dashboard_started", url=f"http://{self.host}:{self.port}/dashboard")
            try:
                code = await process.wait()
            finally:
                with anyio.CancelScope(shield=True):
                    await _stop(process)
            log.warning("dashboard_exited", code=code, starts=self.starts)
            await anyio.sleep(delay)
            delay = min(30.0, delay * 2)
        log.error("dashboard_given_up", starts=self.starts, hint="see its output above")
        await anyio.sleep_forever()


async def _stop(process: Process) -> None:
    if process.returncode is not None:
        return
    process.send_signal(signal.SIGTERM)
    with anyio.move_on_after(5):
        await process.wait()
        return
    process.kill()
    await process.wait()
