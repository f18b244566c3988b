"""PostgreSQL sources: rows by watermark on the event-time column, with a late-arrival lookback,
streamed as Arrow batches (ADBC, COPY) into the raw lake one day file at a time."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa

from features.contracts import QUARANTINE, C
from pipelines.sources.files import SourceReport
from pipelines.sources.readers import PostgresSource, quote_identifier, type_staged
from pipelines.stores import lake


def postgres_window(
    previous_high: datetime | None, lookback: timedelta, until: datetime
) -> tuple[datetime | None, datetime]:
    """[low, high) to read: from midnight (UTC) of ``previous_high - lookback`` (whole days, so each
    day's partition file is rewritten complete) up to ``until``; everything on the first run."""
    if previous_high is None:
        return None, until
    start = previous_high - lookback
    return start.replace(hour=0, minute=0, second=0, microsecond=0), until


def _postgres_batches(
    source: PostgresSource, low: datetime | None, high: datetime
) -> Iterator[pa.RecordBatch]:
    """The source table's rows in [low, high) as Arrow batches of text columns (bounded memory:
    ADBC streams them with COPY)."""
    import adbc_driver_postgresql
    import adbc_driver_postgresql.dbapi as postgresql

    ts = quote_identifier(source.mapping.event_ts)
    fields = []
    for contract, column in source.mapping.source_columns().items():
        if contract == C.event_ts and column:
            # Full precision and an explicit offset, whatever the server's DateStyle.
            fields.append(f"to_char({quote_identifier(column)} at time zone 'UTC', "
                          f"'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') as {contract}")  # fmt: skip
        else:
            fields.append(
                f"{quote_identifier(column)}::text as {contract}"
                if column
                else f"null::text as {contract}"
            )
    table = ".".join(quote_identifier(part) for part in source.table.split("."))
    # Window bounds are timestamps this code produced, written as literals: ADBC only streams
    # (COPY, bounded batches) for statements without bound parameters.
    where = [f"{ts} < '{high.isoformat()}'::timestamptz"]
    if low is not None:
        where.append(f"{ts} >= '{low.isoformat()}'::timestamptz")
    query = f"select {', '.join(fields)} from {table} where {' and '.join(where)}"
    with postgresql.connect(source.url) as conn, conn.cursor() as cur:
        hint = adbc_driver_postgresql.StatementOptions.BATCH_SIZE_HINT_BYTES.value
        cur.adbc_statement.set_options(**{hint: str(source.batch_rows * 120)})
        cur.execute(query)
        yield from cur.fetch_record_batch()


def extract_postgres(
    source: PostgresSource,
    lake_dir: Path,
    *,
    low: datetime | None,
    high: datetime,
    ingested_at: datetime,
    run_id: str,
) -> tuple[SourceReport, pa.Table]:
    """Read ``source`` rows with event time in [low, high) into the raw lake, batch by batch.

    Each day in the window is rewritten whole as ``dt=<day>/<source name>.parquet``; a day in the
    window that no longer has rows loses its file. Returns the report and the rejects.
    """
    report = SourceReport(source.name, watermark_low=low, watermark_high=high)
    writers = lake.DayWriters(lake_dir, "raw", source.name)
    rejects = []
    con = duckdb.connect()
    try:
        for batch in _postgres_batches(source, low, high):
            staged = pa.Table.from_batches([batch]).append_column(
                C.source, pa.array([f"postgres:{source.table}"] * batch.num_rows, pa.string())
            )
            staged = staged.append_column("line_no", pa.nulls(batch.num_rows, pa.int64()))
            staged = staged.append_column(C.raw, pa.nulls(batch.num_rows, pa.string()))
            staged = staged.append_column("format_error", pa.nulls(batch.num_rows, pa.string()))
            typed = type_staged(con, staged, source.mapping, ingested_at=ingested_at, run_id=run_id)
            report.add(typed, f"{source.name} batch")
            writers.write(typed.events)
            rejects.append(typed.rejects)
        report.units = lake.relative_units(lake_dir, "raw", writers.commit())
    except BaseException:
        writers.abort()
        raise
    finally:
        con.close()
    if low is not None:
        # Days of the window that had rows before but have none now.
        for unit in lake.units(lake_dir, "raw"):
            d = lake.unit_date(unit)
            mine = unit.endswith(f"/{source.name}.parquet") and unit not in report.units
            if mine and d is not None and low.date() <= d <= high.date():
                lake.remove_unit(lake_dir, "raw", unit)
    return report, pa.concat_tables(rejects) if rejects else QUARANTINE.empty_table()
