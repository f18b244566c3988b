"""The warehouse under concurrent readers, with real separate processes (DuckDB's locks are per
process): analysts read the published copy, and a lock held for a moment is waited out."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest

from pipelines.stores import warehouse

HOLD_COPY = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
print(con.execute("select count(*) from t").fetchall()[0][0], flush=True)
time.sleep(float(sys.argv[2]))
print(con.execute("select count(*) from t").fetchall()[0][0], flush=True)
"""

HOLD_MAIN = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
con.close()
"""


def _rows(n: int) -> pa.Table:
    return pa.table({"x": list(range(n))})


def _hold_main(path: Path, seconds: float) -> subprocess.Popen[str]:
    """Another process holding the warehouse itself (a writer, or an analyst on the wrong
    file); returns once it holds the lock."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_MAIN, str(path), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_reader_of_the_copy_keeps_its_version_and_never_blocks_a_write(tmp_path: Path) -> None:
    path = tmp_path / "warehouse.duckdb"
    with warehouse.connect(path) as con:
        warehouse.append(con, "t", _rows(3))
    copy = warehouse.read_copy_path(path)
    assert copy.exists()
    reader = subprocess.Popen(
        [sys.executable, "-c", HOLD_COPY, str(copy), "3"], stdout=subprocess.PIPE, text=True
    )
    assert reader.stdout is not None
    first = reader.stdout.readline().strip()
    with warehouse.connect(path, timeout_s=5) as con:  # the night writes while it reads
        warehouse.append(con, "t", _rows(4))
    out, _ = reader.communicate(timeout=30)
    assert (first, out.strip()) == ("3", "3")  # the version it opened, whole
    with warehouse.connect(copy, read_only=True) as con:
        assert con.execute("select count(*) from t").fetchall()[0][0] == 7  # the next one


def test_a_lock_held_for_a_moment_is_waited_out(tmp_path: Path) -> None:
    path = tmp_path / "warehouse.duckdb"
    with warehouse.connect(path) as con:
        warehouse.append(con, "t", _rows(1))
    holder = _hold_main(path, 1.5)
    start = time.monotonic()
    with warehouse.connect(path, timeout_s=30) as con:
        warehouse.append(con, "t", _rows(1))
    waited = time.monotonic() - start
    holder.wait(timeout=30)
    assert waited > 0.5  # it did meet the lock, and got through once it was released
    with warehouse.connect(path, read_only=True) as con:
        assert con.execute("select count(*) from t").fetchall()[0][0] == 2


def test_a_lock_held_too_long_fails_naming_the_file_and_the_copy(tmp_path: Path) -> None:
    path = tmp_path / "warehouse.duckdb"
    with warehouse.connect(path) as con:
        warehouse.append(con, "t", _rows(1))
    holder = _hold_main(path, 5)
    try:
        with (
            pytest.raises(warehouse.WarehouseBusyError, match=r"warehouse.read.duckdb"),
            warehouse.connect(path, timeout_s=0.5),
        ):
            pass
    finally:
        holder.kill()
        holder.wait()
