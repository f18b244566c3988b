"""Two runs at once: the second is refused at once, with one line naming the first; a holder
killed with SIGKILL leaves no stale lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipelines.stores.runlock import RunInProgressError, run_lock

HOLD = """
import sys, time
from datetime import datetime, UTC
from pathlib import Path
from pipelines.stores.runlock import run_lock
at = datetime(2026, 12, 1, 2, tzinfo=UTC)
with run_lock(Path(sys.argv[1]), run_id="holder-1", started_at=at):
    print("held", flush=True)
    time.sleep(600)
"""


@contextmanager
def _held(warehouse: Path) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(warehouse)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


def test_a_second_run_is_refused_naming_the_first_and_sigkill_frees_it(tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    now = datetime(2026, 12, 1, 3, tzinfo=UTC)
    with _held(warehouse) as holder:
        with (
            pytest.raises(RunInProgressError, match=r"run holder-1 since 2026-12-01T02:00:00") as e,
            run_lock(warehouse, run_id="second", started_at=now),
        ):
            pass
        assert f"(pid {holder.pid})" in str(e.value)
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    with run_lock(warehouse, run_id="after", started_at=now):
        pass  # no stale lock after a kill -9


@pytest.mark.slow
def test_the_cli_refuses_a_second_run_in_one_line(tmp_path: Path) -> None:
    recs = str(Path(sys.executable).with_name("recs"))
    env = {**os.environ, "RECS_DATA_DIR": str(tmp_path)}
    with _held(tmp_path / "warehouse.duckdb"):
        done = subprocess.run(
            [recs, "run", "extract"], env=env, capture_output=True, text=True, timeout=600
        )
    assert done.returncode == 1, done.stderr[-2000:]
    mine = [x for x in done.stderr.splitlines() if x.startswith("recs ")]
    assert mine == [mine[0]]
    assert mine[0].startswith("recs run extract: RunInProgressError: another run is in progress")
    assert "Traceback" not in done.stderr  # one line, no traceback without --debug
    assert not (tmp_path / "lake").exists()  # nothing was written
