"""Ctrl-C on a synchronous ``Flow.run`` ends the run promptly and leaves no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from procs import children_of, running

SCRIPT = textwrap.dedent(
    """
    import asyncio, sys, time
    from pathlib import Path
    from auto_workflow import flow, task

    BEAT = sys.argv[1]

    @task(run_in="process")
    def spin(i: int) -> None:
        while True:
            Path(f"{BEAT}.{i}").write_text(str(time.monotonic()))
            sum(range(10_000))

    @task(run_in="thread")
    def block() -> None:
        time.sleep(60)

    @task
    async def wait() -> None:
        await asyncio.sleep(60)

    @flow
    def busy():
        return [spin(0), spin(1), block(), wait()]

    try:
        busy.run()
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(130)
    """
)


def test_sigint_stops_the_run_within_two_seconds_and_leaves_no_children(
    tmp_path: Path,
) -> None:
    beat = tmp_path / "beat"
    script = tmp_path / "busy.py"
    script.write_text(SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(beat)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        beats = [Path(f"{beat}.0"), Path(f"{beat}.1")]
        while not all(b.exists() for b in beats) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert all(b.exists() for b in beats), "the process tasks never started"
        workers = children_of(proc.pid)
        assert len(workers) >= 2
        os.kill(proc.pid, signal.SIGINT)
        start = time.monotonic()
        out, err = proc.communicate(timeout=10)
        took = time.monotonic() - start
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert took < 2.0, f"run took {took:.2f}s to stop after SIGINT; stderr: {err[-2000:]}"
    assert "interrupted" in out, err[-2000:]
    time.sleep(0.2)
    assert not [pid for pid in workers if running(pid)], "worker processes outlived the run"
    first = [b.read_text() for b in beats]
    time.sleep(0.3)
    assert [b.read_text() for b in beats] == first, "process work continued after Ctrl-C"
