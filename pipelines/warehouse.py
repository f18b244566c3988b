"""The analysts' warehouse (DuckDB file): append-only history tables and rebuilt feature tables.

DuckDB allows one writing process per file; every function here opens the file, writes and closes,
so a flow never holds it between stages.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pyarrow as pa


@contextmanager
def connect(path: Path, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection to the warehouse file in UTC, closed on exit."""
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path), read_only=read_only)
    try:
        con.execute("set TimeZone = 'UTC'")
        yield con
    finally:
        con.close()


def append(con: duckdb.DuckDBPyConnection, table: str, rows: pa.Table) -> None:
    """Append ``rows`` to ``table``, creating it with their schema if it does not exist."""
    con.register("_rows", rows)
    try:
        con.execute(f'create table if not exists "{table}" as select * from _rows limit 0')
        con.execute(f'insert into "{table}" by name select * from _rows')
    finally:
        con.unregister("_rows")


def replace(con: duckdb.DuckDBPyConnection, table: str, rows: pa.Table) -> None:
    """Replace ``table`` with ``rows`` in one statement."""
    con.register("_rows", rows)
    try:
        con.execute(f'create or replace table "{table}" as select * from _rows')
    finally:
        con.unregister("_rows")


def table_exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    """Whether ``table`` exists in the main schema."""
    # fetchall: DuckDB 2.0 keeps a result open (and the connection busy) after fetchone.
    rows = con.execute(
        "select count(*) from information_schema.tables where table_name = ?", [table]
    ).fetchall()
    return bool(rows[0][0])
