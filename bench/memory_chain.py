"""Peak memory of a chain whose every link returns a fresh large bytes object.

    python bench/memory_chain.py [--links 50] [--mb 20]

Each variant runs in a fresh interpreter (so its peak RSS is its own): the chain as a flow
of tasks (history on and off) and the same chain as plain function calls. A run that keeps
every intermediate result peaks near links x mb; one that releases each result once its
consumer has started peaks near two results plus the interpreter (target: under 120 MB
for 50 x 20 MB; tests/core/test_memory.py holds it).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

CASE = """
import resource, sys
from auto_workflow import flow, task

links, size, how = int(sys.argv[1]), int(sys.argv[2]) * 2**20, sys.argv[3]

def link(previous, i):
    # A fresh object whose pages are really written (bytes(n) would stay untouched calloc).
    return bytes([i % 256]) * size

step = task(name="step")(link)

@flow
def chain(links):
    value = None
    for i in range(links):
        value = step(value, i)
    return value

if how == "plain":
    value = None
    for i in range(links):
        value = link(value, i)
    out = value
else:
    out = chain.run(links, history=how == "flow")
assert len(out) == size
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def peak_mb(links: int, mb: int, how: str) -> float:
    """Peak RSS (MB) of one fresh interpreter running the chain ``how``."""
    with tempfile.TemporaryDirectory() as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUTO_WORKFLOW_")}
        env["AUTO_WORKFLOW_HISTORY_PATH"] = os.path.join(home, "history.sqlite")
        done = subprocess.run(
            [sys.executable, "-c", CASE, str(links), str(mb), how],
            capture_output=True,
            text=True,
            check=True,
            env=env,
            cwd=home,
        )
    return float(done.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--links", type=int, default=50)
    parser.add_argument("--mb", type=int, default=20)
    opts = parser.parse_args()
    plain = peak_mb(opts.links, opts.mb, "plain")
    print(f"chain of {opts.links} links, each returning a fresh {opts.mb} MB bytes")
    print(f"{'variant':<28} {'peak RSS MB':>12} {'vs plain':>9}")
    print(f"{'plain function calls':<28} {plain:>12.1f} {1.0:>9.2f}")
    for how, label in (("flow", "flow (history on)"), ("nohistory", "flow (history off)")):
        peak = peak_mb(opts.links, opts.mb, how)
        print(f"{label:<28} {peak:>12.1f} {peak / plain:>9.2f}")


if __name__ == "__main__":
    main()
