"""Hand-built run records for the report tests: a realistic nightly ETL and a hostile one."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from auto_workflow._history._records import (
    AttemptRecord,
    ErrorRecord,
    RunRecord,
    RunStatus,
    TaskRecord,
    TaskStatus,
)

T0 = 1_733_500_000.0
"""The sample runs' start (epoch seconds)."""

TRACEBACK = """Traceback (most recent call last):
  File "/srv/etl/flows/nightly.py", line 88, in enrich
    profile = crm.lookup(customer_id)
  File "/srv/etl/crm.py", line 41, in lookup
    raise ValueError(f"customer {customer_id} has no CRM profile")
ValueError: customer 1207 has no CRM profile
"""

FANOUT = 500
FAILED_CHILDREN = (17, 233, 401)
CACHED_CHILDREN = frozenset(range(0, 500, 25))


def _task(
    node: str,
    index: int,
    status: TaskStatus,
    start: float | None,
    end: float | None,
    **extra: Any,
) -> TaskRecord:
    """A task record whose times are seconds from ``T0``."""
    attempts = extra.pop("attempts", 0 if status in (TaskStatus.CACHED, TaskStatus.SKIPPED) else 1)
    return TaskRecord(
        node=node,
        task=node.rsplit(":", 1)[0],
        index=index,
        status=status,
        attempts=attempts,
        started_at=None if start is None else T0 + start,
        ended_at=None if end is None else T0 + end,
        **extra,
    )


def _children(first_index: int, barrier: str, begin: float) -> Iterable[TaskRecord]:
    """500 ``enrich`` calls run 8 at a time, a few failing, every 25th from the cache."""
    lane_free = [begin] * 8
    for item in range(FANOUT):
        lane = min(range(8), key=lane_free.__getitem__)
        start = lane_free[lane]
        if item in CACHED_CHILDREN:
            status, end, error = TaskStatus.CACHED, start + 0.002, None
        elif item in FAILED_CHILDREN:
            status, end = TaskStatus.FAILED, start + 0.05
            error = ErrorRecord(
                type="ValueError",
                message=f"customer {1200 + item} has no CRM profile",
                traceback=TRACEBACK,
            )
        else:
            status, end, error = TaskStatus.SUCCEEDED, start + 0.03 + (item * 37 % 90) / 1000, None
        lane_free[lane] = end
        yield _task(
            f"enrich:{first_index + item}",
            first_index + item,
            status,
            start,
            end,
            fanout=barrier,
            item=item,
            error=error,
        )


def _validate() -> TaskRecord:
    """A task that failed once (a dropped connection), waited 0.5 s and then succeeded."""
    first_error = ErrorRecord(
        type="ConnectionError",
        message="connection reset by peer",
        traceback="Traceback (most recent call last):\n  ...\n"
        "ConnectionError: connection reset by peer\n",
    )
    log = (
        AttemptRecord(number=1, started_at=T0 + 1.2, ended_at=T0 + 1.5, error=first_error),
        AttemptRecord(number=2, started_at=T0 + 2.0, ended_at=T0 + 2.6),
    )
    return _task(
        "validate:2",
        2,
        TaskStatus.SUCCEEDED,
        1.2,
        2.6,
        attempts=2,
        upstream=("extract:0", "load_config:1"),
        attempt_log=log,
    )


def nightly_run() -> RunRecord:
    """A failed nightly ETL: a retry, a 500-way fan-out with failures, a skipped branch."""
    children = list(_children(5, "fanout:4", 3.0))
    fan_end = max(c.ended_at or 0 for c in children)
    audit_error = ErrorRecord(
        type="PermissionError",
        message="s3://audit/2024-12-06/ is read-only",
        traceback="Traceback (most recent call last):\n"
        '  File "/srv/etl/audit.py", line 12, in upload_audit\n'
        "PermissionError: s3://audit/2024-12-06/ is read-only\n",
    )
    tail = len(children) + 5
    tasks = [
        _task("extract:0", 0, TaskStatus.SUCCEEDED, 0.0, 1.2),
        _task("load_config:1", 1, TaskStatus.CACHED, 0.0, 0.001),
        _validate(),
        _task("list_customers:3", 3, TaskStatus.SUCCEEDED, 2.6, 3.0, upstream=("validate:2",)),
        _task(
            "fanout:4",
            4,
            TaskStatus.FAILED,
            3.0,
            fan_end - T0,
            kind="fanout",
            upstream=("list_customers:3",),
        ),
        *children,
        _task(f"aggregate:{tail}", tail, TaskStatus.SKIPPED, None, None, upstream=("fanout:4",)),
        _task(
            f"publish:{tail + 1}",
            tail + 1,
            TaskStatus.SKIPPED,
            None,
            None,
            upstream=(f"aggregate:{tail}",),
        ),
        _task(
            f"quality_report:{tail + 2}",
            tail + 2,
            TaskStatus.SUCCEEDED,
            2.6,
            4.1,
            upstream=("validate:2",),
        ),
        _task(
            f"notify:{tail + 3}",
            tail + 3,
            TaskStatus.CACHED,
            4.1,
            4.102,
            upstream=(f"quality_report:{tail + 2}",),
        ),
        _task(
            f"upload_audit:{tail + 4}",
            tail + 4,
            TaskStatus.FAILED,
            0.0,
            0.9,
            attempts=1,
            error=audit_error,
        ),
    ]
    end = max(t.ended_at or T0 for t in tasks) + 0.01
    return RunRecord(
        run_id="20241206-0214-7f3a9c",
        flow="nightly_etl",
        status=RunStatus.FAILED,
        started_at=T0,
        ended_at=end,
        params={"date": "2024-12-06", "region": "eu-west-1", "full_refresh": False, "limit": 500},
        host="etl-worker-03",
        pid=41872,
        error=ErrorRecord(type="AggregateTaskError", message="4 tasks failed"),
        tasks=tuple(tasks),
    )


HOSTILE = (
    "<script>alert(1)</script>",
    '"];',
    "</script><img src=x onerror=alert(2)>",
    "<!--<script>",
    "a&amp;b",
)


def hostile_run() -> RunRecord:
    """A run whose every piece of text is trying to become markup or end the data early."""
    tasks = [
        _task(
            f"{name}:{i}",
            i,
            TaskStatus.SUCCEEDED if i % 2 else TaskStatus.FAILED,
            i * 0.1,
            i * 0.1 + 0.08,
            upstream=(f"{HOSTILE[i - 1]}:{i - 1}",) if i else (),
            error=None
            if i % 2
            else ErrorRecord(type=name, message=f"</script>{name}", traceback=f"<b>{name}</b>"),
        )
        for i, name in enumerate(HOSTILE)
    ]
    return RunRecord(
        run_id='"];</script>',
        flow=HOSTILE[0],
        status=RunStatus.FAILED,
        started_at=T0,
        ended_at=T0 + 1.0,
        params={"q": "</script><script>alert(3)</script>", HOSTILE[1]: 1},
        host="<i>host</i>",
        tasks=tuple(tasks),
    )


def small_fanout_run(children: int = 5) -> RunRecord:
    """source -> fan_out(double) over ``children`` items -> total, all succeeded."""
    kids = [
        _task(
            f"double:{2 + k}",
            2 + k,
            TaskStatus.SUCCEEDED,
            0.1 + k * 0.01,
            0.2 + k * 0.01,
            fanout="fanout:1",
            item=k,
        )
        for k in range(children)
    ]
    last = 0.2 + children * 0.01
    tasks = [
        _task("source:0", 0, TaskStatus.SUCCEEDED, 0.0, 0.1),
        _task(
            "fanout:1", 1, TaskStatus.SUCCEEDED, 0.1, last, kind="fanout", upstream=("source:0",)
        ),
        *kids,
        _task(
            f"total:{children + 2}",
            children + 2,
            TaskStatus.SUCCEEDED,
            last,
            last + 0.05,
            upstream=("fanout:1",),
        ),
    ]
    return RunRecord(
        run_id="small",
        flow="fan",
        status=RunStatus.SUCCEEDED,
        started_at=T0,
        ended_at=T0 + last + 0.06,
        tasks=tuple(tasks),
    )
