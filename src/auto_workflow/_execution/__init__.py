"""How one attempt of one task call runs: the executor protocol, the local executors (on the
loop, in a thread, in a process pool), later Dask behind the same protocol (private).

``abandoned_thread_count()`` is re-exported here: the docs name this path.
"""

from auto_workflow._execution._local import abandoned_thread_count

__all__ = ["abandoned_thread_count"]
