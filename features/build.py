"""Run the SQL files of ``features/sql`` against logical input views in DuckDB.

Each file is one ``select`` named after the table it produces. Its inputs are views registered
by :func:`register_inputs` (``clean_events``, ``users``, ``items``); values are bound as named
parameters (``$as_of``), never formatted into the SQL text.
"""

from __future__ import annotations

import re
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

_PARAM = re.compile(r"\$([a-z_][a-z0-9_]*)")

FEATURE_TABLES = ("interactions", "holdout", "user_features", "item_features")


@cache
def sql_text(name: str) -> str:
    """Text of ``features/sql/<name>.sql``."""
    return (files("features") / "sql" / f"{name}.sql").read_text()


def run_sql(con: duckdb.DuckDBPyConnection, name: str, **params: Any) -> pa.Table:
    """Run one SQL file and return its result.

    Raises:
        KeyError: naming the file and the parameters it needs but was not given.
    """
    text = sql_text(name)
    needed = set(_PARAM.findall(text))
    missing = needed - params.keys()
    if missing:
        raise KeyError(f"features/sql/{name}.sql needs parameter(s) {sorted(missing)}")
    return con.sql(text, params={k: params[k] for k in needed}).to_arrow_table()


def register_inputs(
    con: duckdb.DuckDBPyConnection, *, events_glob: str, users: Path, items: Path
) -> None:
    """Register the logical inputs of the SQL files as views over lake files."""
    con.execute("set TimeZone = 'UTC'")
    con.execute(
        "create or replace view lake_events as select * from read_parquet("
        f"{sql_literal(events_glob)}, hive_partitioning = true, union_by_name = true)"
    )
    con.execute("create or replace view clean_events as select * from lake_events")
    con.execute(
        f"create or replace view users as select * from read_parquet({sql_literal(str(users))})"
    )
    con.execute(
        f"create or replace view items as select * from read_parquet({sql_literal(str(items))})"
    )


def exclude_pairs(con: duckdb.DuckDBPyConnection, pairs: pa.Table) -> None:
    """Redefine ``clean_events`` (registered by :func:`register_inputs`) without any event on
    the ``user_id`` x ``item_id`` pairs of ``pairs``: what candidates train on when those pairs
    are held out as truth (``last_positives.sql``)."""
    con.register("excluded_pairs", pairs.select(["user_id", "item_id"]))
    con.execute(
        "create or replace view clean_events as "
        "select * from lake_events anti join excluded_pairs using (user_id, item_id)"
    )


def register_frames(con: duckdb.DuckDBPyConnection, **frames: Any) -> None:
    """Register in-memory frames (Arrow, Polars, pandas) as the logical inputs (used by tests)."""
    con.execute("set TimeZone = 'UTC'")
    for name, frame in frames.items():
        con.register(name, frame)


def sql_literal(text: str) -> str:
    """``text`` as a quoted SQL string literal (for statements that cannot bind parameters)."""
    # View definitions cannot take bound parameters; paths are quoted as SQL string literals.
    return "'" + text.replace("'", "''") + "'"
