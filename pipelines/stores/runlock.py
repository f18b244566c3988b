"""One run at a time over a set of stores.

Every flow that writes takes an exclusive ``flock`` on ``<warehouse>.lock`` for its duration and
writes its run id, start time and pid into the file. A second run is refused at once with a
one-line message naming the holder. The operating system releases the lock when the holder's
process ends, however it ends (a ``kill -9`` included), so there is never a stale lock to clear.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path


class RunInProgressError(RuntimeError):
    """Another run holds the stores."""


def lock_path(warehouse: Path) -> Path:
    """The lock file of the stores whose warehouse is ``warehouse``."""
    return warehouse.with_name(f"{warehouse.name}.lock")


@contextmanager
def run_lock(warehouse: Path, *, run_id: str, started_at: datetime) -> Iterator[None]:
    """Hold the stores for one run.

    Raises:
        RunInProgressError: another process holds them (naming its run id and start time).
    """
    path = lock_path(warehouse)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            raise RunInProgressError(
                f"another run is in progress on {warehouse.parent}: run {holder.get('run_id', '?')}"
                f" since {holder.get('started_at', '?')} (pid {holder.get('pid', '?')}); "
                "wait for it to finish, or stop it"
            ) from None
        os.ftruncate(fd, 0)
        info = {"run_id": run_id, "started_at": started_at.isoformat(), "pid": os.getpid()}
        os.pwrite(fd, json.dumps(info).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _holder(fd: int) -> dict[str, object]:
    try:
        text = os.pread(fd, 4096, 0).decode()
        data = json.loads(text) if text else {}
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
