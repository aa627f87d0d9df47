"""Durable runs: what checkpointing costs per task, against the same run not durable.

    python bench/durable.py

Two cases, each in a fresh interpreter with the history in a temp directory:

* ``wide 10k``: 10,000 trivial tasks with small results, durable vs not (history on in
  both); prints the extra µs per task (target: <= 60).
* ``1 MB x 50``: checkpointing 50 results of 1 MB of bytes, beside writing the same bytes
  with ``open().write()`` + ``os.replace``; prints the ratio (target: <= 1.5x).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile

CASE = """
import json, os, sys, tempfile, time, uuid
from auto_workflow import fan_out, flow, task

@task
def small(x: int) -> int:
    return x

@task
def big(x: int) -> bytes:
    return os.urandom(1 << 20)

@flow
def wide(n: int) -> list[int]:
    return fan_out(small, list(range(n)))

@flow
def blobs(n: int) -> list[bytes]:
    return fan_out(big, list(range(n)))

def best(fn, reps=3):
    out = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        out = min(out, time.perf_counter() - start)
    return out

case = sys.argv[1]
if case == "wide":
    n = 10_000
    wide.run(50)
    plain = best(lambda: wide.run(n))
    durable = best(lambda: wide.run(n, durable=True, run_id=uuid.uuid4().hex))
    print(json.dumps({"plain": plain, "durable": durable, "n": n}))
else:
    from pathlib import Path
    from auto_workflow._history._checkpoints import RunCheckpoints

    n = 50
    data = [os.urandom(1 << 20) for _ in range(n)]
    where = tempfile.mkdtemp()

    def raw() -> None:
        for i, blob in enumerate(data):
            temp = os.path.join(where, f".{i}.tmp")
            with open(temp, "wb") as f:
                f.write(blob)
            os.replace(temp, os.path.join(where, str(i)))

    def checkpoints() -> None:
        store = RunCheckpoints(Path(where) / "cp", uuid.uuid4().hex)
        for i, blob in enumerate(data):
            store.save(f"big:{i}", blob)
        store.close()

    print(json.dumps({"raw": best(raw, 5), "checkpoints": best(checkpoints, 5), "n": n}))
"""


def _run(case: str, home: str) -> dict[str, float]:
    env = {"AUTO_WORKFLOW_HISTORY_PATH": f"{home}/{case}.sqlite", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", CASE, case], capture_output=True, text=True, check=True, env=env
    )
    result: dict[str, float] = json.loads(out.stdout)
    return result


def main() -> None:
    with tempfile.TemporaryDirectory() as home:
        wide = _run("wide", home)
        extra = (wide["durable"] - wide["plain"]) * 1e6 / wide["n"]
        print(
            f"wide 10k: not durable {wide['plain'] * 1e6 / wide['n']:.1f} µs/task, durable "
            f"{wide['durable'] * 1e6 / wide['n']:.1f} µs/task: +{extra:.1f} µs/task (target <= 60)"
        )
        big = _run("big", home)
        print(
            f"1 MB x 50: checkpoints {big['checkpoints'] * 1000:.1f} ms, open().write() + "
            f"os.replace {big['raw'] * 1000:.1f} ms: {big['checkpoints'] / big['raw']:.2f}x "
            "(target <= 1.5x)"
        )


if __name__ == "__main__":
    main()
