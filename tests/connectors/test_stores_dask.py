"""A Dask worker in another process reads the artifacts a run persisted at an abfs:// URL
(Azurite), where a memory:// store, this process's own, is out of its reach.

The cluster is a ``dask scheduler`` and a ``dask worker`` started here as processes of their
own (a LocalCluster's worker processes would leave multiprocessing's resource tracker
behind as a child of the test process)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import Azurite

from auto_workflow import flow, task
from auto_workflow._history._engine import close_all
from auto_workflow.artifacts import ArtifactRef, FsspecArtifactStore, get_store
from auto_workflow.exceptions import TaskExecutionError
from conftest import need
from procs import children_of, free_port, stop_groups

pytestmark = [
    pytest.mark.timeout(180),  # a cluster starts on a shared, noisy 2-core machine
    pytest.mark.filterwarnings("ignore:Sending a large body directly:ResourceWarning"),
]

_DASK_THREADS = ("IO loop", "ThreadPoolExecutor", "Dask", "AsyncProcess")
CLUSTER_PIDS: set[int] = set()


@pytest.fixture(scope="module")
def cluster_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A scheduler and a worker, each a process of its own, started in a directory where the
    tests cannot be imported (as on another machine); the scheduler's address."""
    distributed = need("distributed")
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    common: dict[str, Any] = {"cwd": tmp_path_factory.mktemp("cluster"), "env": env}
    common["start_new_session"] = True
    dask = str(Path(sys.executable).with_name("dask"))
    scheduler = [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port)]
    worker = [dask, "worker", address, "--nworkers", "1", "--nthreads", "1"]
    procs = [subprocess.Popen([*scheduler, "--no-dashboard"], **common)]
    try:
        procs.append(subprocess.Popen([*worker, "--host", "127.0.0.1", "--no-dashboard"], **common))
        CLUSTER_PIDS.update(p.pid for p in procs)
        with distributed.Client(address, timeout=60) as client:
            client.wait_for_workers(1, timeout=60)
        yield address
    finally:
        stop_groups(procs)
        CLUSTER_PIDS.clear()


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """This module's leak check: the module's cluster (its processes and threads) is
    expected; nothing else is."""
    threads, children = set(threading.enumerate()), children_of()
    yield
    close_all()  # the history's writer thread lingers between runs on purpose

    def extra_children() -> set[int]:
        return children_of() - children - CLUSTER_PIDS

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and extra_children():
        time.sleep(0.1)
    assert not extra_children(), "a test left child processes behind"
    new = {t.name for t in set(threading.enumerate()) - threads if t.is_alive()}
    assert not {n for n in new if not n.startswith(_DASK_THREADS)}, sorted(new)


@task(persist=True)
def _extract(n: int) -> list[int]:
    return list(range(n))


@task
def _read_on_worker(ref: ArtifactRef) -> tuple[int, int]:
    return sum(get_store().get(ref)), os.getpid()


@flow
def _pipeline(n: int) -> tuple[int, int]:
    return _read_on_worker(_extract(n))


def _executor(address: str) -> Any:
    from auto_workflow.dask import DaskExecutor

    return DaskExecutor(address=address)


def test_a_dask_worker_reads_an_abfs_artifact(cluster_address: str, azurite: Azurite) -> None:
    adlfs = need("adlfs")
    container = f"d{uuid.uuid4().hex[:12]}"
    options = {"connection_string": azurite.connection_string}
    fs = adlfs.AzureBlobFileSystem(skip_instance_cache=True, **options)
    fs.mkdir(container)
    try:
        store = FsspecArtifactStore(f"abfs://{container}/artifacts", storage_options=options)
        total, pid = _pipeline.run(100, artifact_store=store, executor=_executor(cluster_address))
        assert total == 4950
        assert pid != os.getpid()
        (written,) = fs.find(f"{container}/artifacts")  # persisted here, read there
        assert written.startswith(f"{container}/artifacts/")
    finally:
        fs.rm(container, recursive=True)


def test_a_memory_store_is_out_of_a_dask_workers_reach(cluster_address: str) -> None:
    store = FsspecArtifactStore(f"memory://aw-{uuid.uuid4().hex}")
    with pytest.raises(TaskExecutionError, match=r"no artifact.*memory of one process"):
        _pipeline.run(100, artifact_store=store, executor=_executor(cluster_address))
