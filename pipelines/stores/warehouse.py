"""The analysts' warehouse (DuckDB file): append-only history tables and rebuilt feature tables.

DuckDB allows one writing process per file, and a writer fails while any other process holds the
file open. So the engine writes ``warehouse.duckdb`` and, after every write, publishes a read
copy beside it (``warehouse.read.duckdb``: written aside, renamed into place) that analysts open
instead: a session on the copy keeps reading the version it opened while the next one is
swapped in, and never blocks the night. Every open of either file retries lock errors with
backoff. Every function here opens the file, writes and closes, so a flow never holds it between
stages. Every SQL statement on the warehouse lives here.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa

from features.build import sql_literal
from features.contracts import C

LOCK_TIMEOUT_S = 120.0
"""How long an open waits for another process's lock before it gives up."""


class WarehouseBusyError(RuntimeError):
    """Another process held the warehouse file for longer than the timeout."""


def read_copy_path(path: Path) -> Path:
    """The analysts' copy of the warehouse at ``path`` (``warehouse.read.duckdb``)."""
    return path.with_name(f"{path.stem}.read{path.suffix}")


def _open(path: Path, read_only: bool, timeout_s: float) -> duckdb.DuckDBPyConnection:
    """Open with retries: a lock held by another process (an analyst's session, a reader that
    opens and closes in a loop) is waited out with exponential backoff up to ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    delay = 0.05
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise
            if time.monotonic() + delay > deadline:
                raise WarehouseBusyError(
                    f"{path}: still locked by another process after {timeout_s:.0f} s "
                    f"(analysts should open {read_copy_path(path).name}): {exc}"
                ) from exc
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


@contextmanager
def connect(
    path: Path, *, read_only: bool = False, timeout_s: float = LOCK_TIMEOUT_S
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection to the warehouse file in UTC, closed on exit; after a writing connection
    closes, the analysts' read copy is refreshed (:func:`publish_read_copy`)."""
    if read_only and not path.exists():
        raise FileNotFoundError(f"{path}: no warehouse yet; run `recs run nightly` first")
    path.parent.mkdir(parents=True, exist_ok=True)
    con = _open(path, read_only, timeout_s)
    try:
        con.execute("set TimeZone = 'UTC'")
        yield con
    finally:
        con.close()
    if not read_only:
        publish_read_copy(path)


def publish_read_copy(path: Path) -> Path:
    """Copy the (closed, checkpointed) warehouse aside and rename it over the read copy in one
    step: readers see the previous copy or this one, never a partial file."""
    target = read_copy_path(path)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        shutil.copyfile(path, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def append(con: duckdb.DuckDBPyConnection, table: str, rows: pa.Table) -> None:
    """Append ``rows`` to ``table``, creating it with their schema if it does not exist."""
    con.register("_rows", rows)
    try:
        con.execute(f'create table if not exists "{table}" as select * from _rows limit 0')
        # A newer release may add columns to a history table: add them, older rows get null.
        have = {r[0] for r in con.execute(f'describe "{table}"').fetchall()}
        for name, dtype, *_ in con.execute("describe _rows").fetchall():
            if name not in have:
                con.execute(f'alter table "{table}" add column "{name}" {dtype}')
        con.execute(f'insert into "{table}" by name select * from _rows')
    finally:
        con.unregister("_rows")


LATEST = "main"
"""The schema of the latest feature tables (what the nightly and analysts use)."""

KEEP_BACKFILL_SCHEMAS = 7
"""Backfill feature schemas kept in the warehouse (the newest built); older ones are dropped."""


def features_schema(as_of: datetime, *, backfill: bool) -> str:
    """Where a run's feature tables go: :data:`LATEST`, or for a backfill its own schema per
    ``as_of`` (``asof_20261011t000000``), so a backfill never overwrites the latest tables."""
    return f"asof_{as_of:%Y%m%dt%H%M%S}" if backfill else LATEST


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Statements inside commit together or not at all (a kill in between leaves none)."""
    con.execute("begin transaction")
    try:
        yield
    except BaseException:
        con.execute("rollback")
        raise
    con.execute("commit")


def replace_quarantine(
    con: duckdb.DuckDBPyConnection, stage: str, parts: list[str], rows: pa.Table
) -> None:
    """The quarantine rows of ``stage`` for these lake parts (an extracted file's part, or a
    validated partition file) become ``rows`` (which carry a ``part`` column): a rerun, a
    ``--force`` or a retry after a kill replaces them instead of adding copies. Call inside
    :func:`transaction` with the stage's other writes."""
    if parts and table_exists(con, "quarantine"):
        have = {r[0] for r in con.execute("describe quarantine").fetchall()}
        if "part" in have:
            con.execute(
                "delete from quarantine where stage = ? and part in (select unnest(?))",
                [stage, parts],
            )
    if rows.num_rows:
        append(con, "quarantine", rows)


def replace(
    con: duckdb.DuckDBPyConnection, table: str, rows: pa.Table, *, schema: str = LATEST
) -> None:
    """Replace ``schema.table`` with ``rows`` in one statement (the schema is created)."""
    con.register("_rows", rows)
    try:
        con.execute(f'create schema if not exists "{schema}"')
        con.execute(f'create or replace table "{schema}"."{table}" as select * from _rows')
    finally:
        con.unregister("_rows")


def table_exists(con: duckdb.DuckDBPyConnection, table: str, schema: str = LATEST) -> bool:
    """Whether ``table`` exists in ``schema``."""
    # fetchall: DuckDB 2.0 keeps a result open (and the connection busy) after fetchone.
    rows = con.execute(
        "select count(*) from information_schema.tables where table_name = ? and table_schema = ?",
        [table, schema],
    ).fetchall()
    return bool(rows[0][0])


def columns(con: duckdb.DuckDBPyConnection, table: str) -> set[str]:
    """The column names of ``table`` (empty when it does not exist)."""
    rows = con.execute(
        "select column_name from information_schema.columns where table_name = ?", [table]
    ).fetchall()
    return {str(r[0]) for r in rows}


def read_tables(path: Path, *names: str, schema: str = LATEST) -> list[pl.DataFrame]:
    """Whole tables of ``schema`` as Polars frames, from one read-only connection.

    Raises:
        FileNotFoundError: naming the warehouse and the missing table.
    """
    with connect(path, read_only=True) as con:
        frames = []
        for name in names:
            if not table_exists(con, name, schema):
                raise FileNotFoundError(
                    f"{path}: no table {schema}.{name}; run `recs run features` first"
                )
            frame = pl.from_arrow(con.sql(f'select * from "{schema}"."{name}"').to_arrow_table())
            assert isinstance(frame, pl.DataFrame)
            frames.append(frame)
    return frames


def extracted_checksums(con: duckdb.DuckDBPyConnection) -> dict[tuple[str, str], str]:
    """(source, file) -> checksum of its latest extraction."""
    if not table_exists(con, "extractions"):
        return {}
    rows = con.execute(
        "select source, file, arg_max(checksum, extracted_at) from extractions "
        "where checksum is not null group by all"
    ).fetchall()
    return {(str(s), str(f)): str(c) for s, f, c in rows}


def watermarks(con: duckdb.DuckDBPyConnection) -> dict[str, datetime]:
    """Database source -> the high watermark of its last incremental (non-backfill) read."""
    if not table_exists(con, "extractions"):
        return {}
    rows = con.execute(
        "select source, max(watermark_high) from extractions "
        "where not backfill and watermark_high is not null group by source"
    ).fetchall()
    return {str(s): w for s, w in rows}


def quarantine_summary(path: Path) -> pa.Table | None:
    """Quarantined records by stage and reason (None when nothing was ever quarantined), from
    the read copy when there is one (a run may be writing the warehouse)."""
    copy = read_copy_path(path)
    with connect(copy if copy.exists() else path, read_only=True) as con:
        if not table_exists(con, "quarantine"):
            return None
        return con.sql(
            "select stage, reason, count(*) as n, max(quarantined_at) as last_seen, "
            "any_value(source) as example_source from quarantine "
            "group by stage, reason order by n desc"
        ).to_arrow_table()


def releasable_quarantine(path: Path) -> pl.DataFrame:
    """Distinct rows validation quarantined and no release has let out yet: ``raw_md5, reason,
    raw``."""
    with connect(path) as con:
        if not table_exists(con, "quarantine"):
            return pl.DataFrame(
                schema={"raw_md5": pl.String, "reason": pl.String, "raw": pl.String}
            )
        released_before = (
            "anti join quarantine_releases using (raw_md5)"
            if table_exists(con, "quarantine_releases")
            else ""
        )
        return pl.DataFrame(
            con.sql(
                f"""
                select distinct md5(raw) as raw_md5, reason, raw
                from (select *, md5(raw) as raw_md5 from quarantine where stage = 'validate')
                {released_before}
                """
            ).to_arrow_table()
        )


def serving_plan(
    path: Path, run_id: str | None = None, model_version: str | None = None
) -> dict[str, str] | None:
    """Segment -> candidate from ``segment_choices``: of the training that registered
    ``model_version``, else of run ``run_id``, else the last recorded (None when there is none)."""
    with connect(path, read_only=True) as con:
        if not table_exists(con, "segment_choices"):
            return None
        if model_version is not None:
            if "model_version" not in {
                r[0] for r in con.execute("describe segment_choices").fetchall()
            }:
                return None
            where, args = "model_version = ?", [model_version]
        elif run_id is not None:
            where, args = "run_id = ?", [run_id]
        else:
            where, args = "run_id = (select arg_max(run_id, rowid) from segment_choices)", []
        rows = con.execute(
            f"select segment, arg_max(candidate, rowid) from segment_choices where {where} "
            "group by segment order by segment",
            args,
        ).fetchall()
    return {str(s): str(c) for s, c in rows} or None


def blocklist(path: Path) -> pl.DataFrame:
    """(user_id, item_id) pairs never to recommend, from the table ``blocklist`` an operator
    fills (``recs serving block``); empty when there is none."""
    empty = pl.DataFrame(schema={C.user_id: pl.String, C.item_id: pl.String})
    with connect(path, read_only=True) as con:
        if not table_exists(con, "blocklist"):
            return empty
        frame = pl.from_arrow(con.sql("select user_id, item_id from blocklist").to_arrow_table())
    assert isinstance(frame, pl.DataFrame)
    return frame.cast({C.user_id: pl.String, C.item_id: pl.String})


def validation_run_ids(path: Path) -> list[str]:
    """The runs whose validation passed, oldest first: the batches the clean zone holds."""
    with connect(path, read_only=True) as con:
        if not table_exists(con, "validation_runs"):
            return []
        rows = con.execute(
            "select run_id from validation_runs where success order by validated_at"
        ).fetchall()
    return [str(r[0]) for r in rows]


def failed_batch_units(path: Path, batch_id: str) -> list[str]:
    """The raw partition files of the failed validation ``batch_id`` (its run id).

    Raises:
        LookupError: no failed validation has that id (naming the latest failed ones).
    """
    with connect(path, read_only=True) as con:
        if not table_exists(con, "validation_runs"):
            raise LookupError(f"{path}: no validation has run yet")
        rows = con.execute(
            "select arg_max(units, validated_at) from validation_runs "
            "where run_id = ? and not success",
            [batch_id],
        ).fetchall()
        if rows[0][0] is None:
            latest = con.execute(
                "select run_id from validation_runs where not success "
                "order by validated_at desc limit 3"
            ).fetchall()
            raise LookupError(
                f"no failed validation batch {batch_id!r}; the latest failed: "
                + (", ".join(str(r[0]) for r in latest) or "none")
            )
    return str(rows[0][0]).split(",")


def skipped_units(path: Path) -> dict[str, float]:
    """Raw partition file -> its modification time when an operator skipped it
    (``batch_decisions``); a file extracted again since is no longer skipped."""
    if not path.exists():
        return {}
    with connect(path, read_only=True) as con:
        if not table_exists(con, "batch_decisions"):
            return {}
        rows = con.execute(
            "select unit, arg_max(raw_mtime, decided_at) from batch_decisions "
            "where action = 'skip' group by unit"
        ).fetchall()
    return {str(u): float(m) for u, m in rows}


def require_features_for(path: Path, as_of: datetime, schema: str = LATEST) -> None:
    """Refuse to use feature tables built for another ``as_of``.

    Raises:
        ValueError: naming the ``as_of`` the tables were built for and the command to run.
    """
    with connect(path, read_only=True) as con:
        built = (
            con.execute(
                "select arg_max(as_of, rowid) from feature_runs "
                "where coalesce(features_schema, 'main') = ?",
                [schema],
            ).fetchall()[0][0]
            if table_exists(con, "feature_runs")
            else None
        )
    if built != as_of:
        have = built.isoformat() if isinstance(built, datetime) else "none"
        raise ValueError(
            f"{path}: the feature tables ({schema}) are for as_of {have}, not "
            f"{as_of.isoformat()}; run `recs run features --as-of {as_of.isoformat()}` first"
        )


def drop_old_backfill_schemas(con: duckdb.DuckDBPyConnection, keep: int) -> list[str]:
    """Drop the backfill feature schemas beyond the ``keep`` built most recently."""
    schemas = [
        str(r[0])
        for r in con.execute(
            "select schema_name from information_schema.schemata where schema_name like 'asof_%'"
        ).fetchall()
    ]
    order = {
        str(s): n
        for s, n in con.execute(
            "select features_schema, max(rowid) from feature_runs "
            "where features_schema like 'asof_%' group by all"
        ).fetchall()
    }
    schemas.sort(key=lambda s: order.get(s, -1), reverse=True)
    for old in schemas[keep:]:
        con.execute(f'drop schema "{old}" cascade')
    return schemas[keep:]


TABLE_COMMENTS = {
    "quarantine": "One row per rejected record: stage, reason, source, line, event id, raw, part.",
    "extractions": "One row per extracted file or database window: checksum or watermarks, counts.",
    "validation_runs": "One row per validation: rows in, clean, quarantined; failed expectations.",
    "quarantine_releases": "One row per quarantined record released into the clean zone.",
    "batch_decisions": "One row per raw file of a failed batch an operator accepted or skipped.",
    "interactions": "One row per user_id x item_id with an event before the run's as_of.",
    "user_features": "One row per user_id: catalog attributes and history counts as of as_of.",
    "item_features": "One row per item_id: catalog attributes, availability, users before as_of.",
    "popular_items": "One row per segment x rank: popular available items before as_of.",
    "eval_interactions": "interactions as of the evaluation window's start.",
    "eval_user_features": "user_features as of the evaluation window's start.",
    "eval_item_features": "item_features as of the evaluation window's start.",
    "holdout": "The evaluation window's truth: one row per user_id x item_id first liked in it.",
    "feature_runs": "One row per feature build: as_of, window start, rows per table.",
    "segment_choices": "One row per run x user segment: the candidate serving it and its P@K.",
    "model_runs": "One row per training decision: runs, version, as_of, promoted, reasons, P@K.",
    "tuning_runs": "One row per tuning study: window, trials, best and in-use precision, params.",
    "publications": "One row per publish: run, model version, users, rows, checksum.",
    "recommendations": "The latest published lists: one row per user_id x rank (a view).",
    "recommendations_history": "Every published version: one row per run_id x user_id x rank.",
    "blocklist": "Pairs never recommended: one row per user_id x item_id, with reason, added_at.",
    "recommendations_with_items": "recommendations joined to item_features (a view).",
}
"""The data dictionary, kept in the database itself (``COMMENT ON``)."""


def append_history(con: duckdb.DuckDBPyConnection, scored: Path, published_at: datetime) -> None:
    """Append a published version's lists to ``recommendations_history`` (one row per
    run_id x user_id x rank, with ``published_at``); a run published again replaces its rows."""
    source = f"read_parquet({sql_literal(str(scored.resolve()))})"
    if not table_exists(con, "recommendations_history"):
        con.execute(
            "create table recommendations_history as "
            f"select *, null::timestamptz as published_at from {source} limit 0"
        )
    con.execute(
        f"delete from recommendations_history where run_id in (select run_id from {source})"
    )
    con.execute(f"insert into recommendations_history select *, ? from {source}", [published_at])


def publish_views(con: duckdb.DuckDBPyConnection, scored: Path) -> None:
    """Point ``recommendations`` (and ``recommendations_with_items``) at the published lists, and
    write every table's comment."""
    con.execute(
        "create or replace view recommendations as "
        f"select * from read_parquet({sql_literal(str(scored.resolve()))})"
    )
    if table_exists(con, "item_features"):
        con.execute(
            "create or replace view recommendations_with_items as "
            "select r.*, i.* exclude (item_id) from recommendations r "
            "left join item_features i using (item_id)"
        )
    kinds = dict(
        con.execute("select table_name, table_type from information_schema.tables").fetchall()
    )
    for name, comment in TABLE_COMMENTS.items():
        if name in kinds:
            kind = "view" if kinds[name] == "VIEW" else "table"
            con.execute(f'comment on {kind} "{name}" is {sql_literal(comment)}')
