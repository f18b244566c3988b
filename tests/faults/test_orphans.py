"""A ``kill -9`` of the CLI orphans what it started (Prefect's ephemeral API server); the next
``recs`` command stops it, and leaves alone what a live command started."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.runtime import OWNER, reap_orphans

# An owner that marks its child as `recs` does, prints the child's pid, then waits forever.
OWNER_SCRIPT = f"""
import os, subprocess, sys, time
os.environ[{OWNER!r}] = str(os.getpid())
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print(child.pid, flush=True)
time.sleep(600)
"""


def _start_owner() -> tuple[subprocess.Popen[str], int]:
    owner = subprocess.Popen([sys.executable, "-c", OWNER_SCRIPT], stdout=subprocess.PIPE,
                             text=True)  # fmt: skip
    assert owner.stdout is not None
    return owner, int(owner.stdout.readline())


def _gone(pid: int, timeout_s: float = 10) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
            state = Path(f"/proc/{pid}/stat").read_text().split()[2]
            if state == "Z":  # dead, waiting for its (new) parent to reap it
                return True
        except (ProcessLookupError, FileNotFoundError):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reaping reads /proc (Linux only)")
def test_the_child_of_a_killed_command_is_stopped_and_a_live_ones_is_not() -> None:
    killed, orphan = _start_owner()
    live, kept = _start_owner()
    try:
        killed.kill()  # kill -9: its child is orphaned, still running; not waited for yet,
        # the owner is a zombie (as when its shell has not reaped it): dead all the same
        assert not _gone(orphan, timeout_s=0.5)
        stopped = reap_orphans()
        assert orphan in stopped
        assert kept not in stopped
        assert _gone(orphan)
        assert not _gone(kept, timeout_s=0.5)
    finally:
        for owner in (killed, live):
            owner.kill()
            owner.wait()
        for pid in (orphan, kept):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
