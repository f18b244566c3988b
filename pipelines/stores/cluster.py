"""Shards on a Dask cluster: the stages that split cleanly (extraction per landing file,
scoring per user chunk) run their shards as tasks on the cluster a scheduler address names;
without one they run the same shard function in the process, in the same order.

Every shard is a function of its inputs alone that returns its result to the stage (an
extraction shard also writes its file's raw parts, atomically: run twice, the same files),
and the stage commits results in shard order: the lake files, lists and quarantine are the
single-machine ones whichever worker ran what. What every shard reads (the model bundle, item
vectors) is scattered once to every worker (:func:`broadcast`); a shard whose worker dies is run
again on another (Dask reschedules it; ``allowed-failures`` bounds how often).

A real cluster's workers must see the same lake path (a shared file system or an object store
mounted at the same place) and import this project (install it on the workers' image).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

SHARD_RETRIES = 2
"""Retries of a shard that raised (a dead worker is a separate count: Dask's
``distributed.scheduler.allowed-failures``, 3 by default)."""


@contextmanager
def local_cluster(workers: int) -> Iterator[str]:
    """A ``LocalCluster`` of ``workers`` single-threaded worker processes for the duration;
    yields its scheduler address."""
    from distributed import LocalCluster

    with LocalCluster(  # type: ignore[no-untyped-call]
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        yield str(cluster.scheduler_address)


@contextmanager
def connect(address: str | None) -> Iterator[Any]:
    """A ``distributed.Client`` to ``address`` for the duration (None: None, run in process)."""
    if not address:
        yield None
        return
    from distributed import Client

    with Client(address, set_as_default=False) as client:  # type: ignore[no-untyped-call]
        yield client


def threads_per_shard(client: Any, wanted: int) -> int:
    """Threads a shard's kernels may use: ``wanted`` in process; on a cluster no more than a
    worker has (two kernel threads on a one-thread worker fight its neighbour for the core)."""
    if client is None:
        return wanted
    return max(1, int(min(wanted, *client.nthreads().values())))


def broadcast(client: Any, value: T) -> Any:
    """``value`` on every worker once (a future the shards take as an argument); in process,
    ``value`` itself."""
    if client is None:
        return value
    return client.scatter(value, broadcast=True, hash=False)


def map_in_order(
    client: Any, fn: Callable[..., R], shared: Any, items: Iterable[T], *args: Any
) -> Iterator[R]:
    """``fn(shared, item, *args)`` for each item, yielded in the items' order. On a cluster,
    up to two shards per worker thread are in flight (items are cut only as they are
    submitted; a result leaves the cluster once yielded), so memory follows the window, not
    the number of shards."""
    if client is None:
        for item in items:
            yield fn(shared, item, *args)
        return
    window = max(2, 2 * sum(client.nthreads().values()))
    pending: deque[Any] = deque()
    for item in items:
        pending.append(client.submit(fn, shared, item, *args, pure=False, retries=SHARD_RETRIES))
        if len(pending) >= window:
            yield _take(pending.popleft())
    while pending:
        yield _take(pending.popleft())


def _take(future: Any) -> Any:
    result = future.result()
    future.release()
    return result
