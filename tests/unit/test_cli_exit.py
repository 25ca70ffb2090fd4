"""`taskflow` leaves even when an abandoned sync task still runs in its thread."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

SCRIPT = textwrap.dedent(
    """
    import threading, time
    from taskflow.__main__ import _exit_past_stuck_threads
    threading.Thread(target=time.sleep, args=(60,)).start()  # non-daemon, like anyio's
    _exit_past_stuck_threads()
    print("not reached")
    """
)


def test_a_thread_still_running_a_task_does_not_hold_the_process_open() -> None:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert b"not reached" not in done.stdout
    assert b"exit_with_task_threads_running" in done.stdout + done.stderr
    assert time.monotonic() - started < 20  # not the thread's 60 s


def test_without_stuck_threads_it_returns() -> None:
    script = "from taskflow.__main__ import _exit_past_stuck_threads as f; f(); print('back')"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=30)
    assert (done.returncode, done.stdout.strip()) == (0, b"back")
