"""Extract: sources -> typed events in the raw lake; records that cannot be typed -> quarantine.

Every record read ends either in the lake or in the returned rejects: ``read == written +
rejected``, checked per file and per database window. File sources are incremental by checksum
(a file already extracted unchanged is skipped); a database source by a watermark on its event-time
column with a late-arrival lookback. Both are idempotent: a re-read replaces exactly the
partition files it covers.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from features.contracts import EVENTS, QUARANTINE, C, ContractError
from pipelines import lake
from pipelines.sources import (
    FileSource,
    PostgresSource,
    Typed,
    _quote,
    read_event_file,
    type_staged,
)


def file_checksum(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def read_catalog(path: Path, id_column: str, required: tuple[str, ...] = ()) -> pa.Table:
    """Read a catalog CSV: ids as trimmed strings (a blank id becomes null), and a null ``tags``
    column for items that have none, so feature SQL can rely on it. Whether ids are present and
    unique, and attributes in their domains, is the catalog suite's call
    (:func:`pipelines.validate.validate_catalog`).

    Raises:
        ContractError: naming the file and the missing column.
    """
    table = pacsv.read_csv(path)
    for column in (id_column, *required):
        if column not in table.column_names:
            raise ContractError(f"{path}: missing column {column!r}; got {table.column_names}")
    ids = pc.utf8_trim_whitespace(table.column(id_column).cast(pa.string()))
    ids = pc.if_else(pc.equal(ids, ""), pa.scalar(None, pa.string()), ids)
    table = table.set_column(table.schema.get_field_index(id_column), id_column, ids)
    if id_column == C.item_id and "tags" not in table.column_names:
        table = table.append_column("tags", pa.nulls(table.num_rows, pa.string()))
    return table


@dataclass
class SourceReport:
    """What one source gave in one extraction; ``rows_read == rows_written + rows_rejected``."""

    source: str
    units: list[str] = field(default_factory=list)
    files_read: int = 0
    files_skipped: int = 0
    rows_read: int = 0
    rows_written: int = 0
    rows_rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    watermark_low: datetime | None = None
    watermark_high: datetime | None = None

    def add(self, typed: Typed, what: str) -> None:
        if typed.n_read != typed.events.num_rows + typed.rejects.num_rows:
            raise AssertionError(f"{what}: rows do not reconcile")
        self.rows_read += typed.n_read
        self.rows_written += typed.events.num_rows
        self.rows_rejected += typed.rejects.num_rows
        reasons = pc.value_counts(typed.rejects.column(C.reason)).to_pylist()
        for entry in reasons:
            key = str(entry["values"])
            self.rejected_by_reason[key] = self.rejected_by_reason.get(key, 0) + entry["counts"]


def part_name(source: str, path: Path) -> str:
    """Lake part of a source file: ``<source>--<file name without extensions>``."""
    return f"{source}--{path.name.split('.', 1)[0]}"


def extract_file(
    path: Path, source: FileSource, lake_dir: Path, *, ingested_at: datetime, run_id: str
) -> tuple[Typed, list[str]]:
    """Read one file and replace its part in the raw lake. Returns what was read and the
    partition files written (relative to the zone)."""
    typed = read_event_file(path, source, ingested_at=ingested_at, run_id=run_id)
    written = lake.write_part(lake_dir, "raw", part_name(source.name, path), typed.events)
    root = lake.zone_dir(lake_dir, "raw")
    return typed, [str(p.relative_to(root)) for p in written]


def file_date(path: Path) -> date | None:
    """The first YYYY-MM-DD in a file name, if any (used to pick files of a backfill range)."""
    match = re.search(r"(\d{4}-\d{2}-\d{2})", path.name)
    return date.fromisoformat(match.group(1)) if match else None


# --------------------------------------------------------------------------------------------
# PostgreSQL


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

    ts = _quote(source.mapping.event_ts)
    fields = []
    for contract, column in source.mapping.source_columns().items():
        if contract == C.event_ts and column:
            # Full precision and an explicit offset, whatever the server's DateStyle.
            fields.append(f"to_char({_quote(column)} at time zone 'UTC', "
                          f"'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') as {contract}")  # fmt: skip
        else:
            fields.append(
                f"{_quote(column)}::text as {contract}" if column else f"null::text as {contract}"
            )
    table = ".".join(_quote(part) for part in source.table.split("."))
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


class _DayWriters:
    """One Parquet writer per event date, writing beside the final files; renamed at the end."""

    def __init__(self, lake_dir: Path, part: str) -> None:
        self.root = lake.zone_dir(lake_dir, "raw")
        self.part = part
        self.writers: dict[str, tuple[pq.ParquetWriter, Path]] = {}

    def write(self, events: pa.Table) -> None:
        dates = pc.strftime(events.column(C.event_ts), format="%Y-%m-%d")
        for dt in pc.unique(dates).to_pylist():
            rows = events.filter(pc.equal(dates, dt))
            if dt not in self.writers:
                final = self.root / f"dt={dt}" / f"{self.part}.parquet"
                final.parent.mkdir(parents=True, exist_ok=True)
                tmp = final.parent / f".{final.name}.{uuid.uuid4().hex}.tmp"
                self.writers[dt] = (pq.ParquetWriter(tmp, EVENTS, compression="zstd"), tmp)
            self.writers[dt][0].write_table(rows)

    def commit(self) -> list[str]:
        written = []
        for dt, (writer, tmp) in sorted(self.writers.items()):
            writer.close()
            final = self.root / f"dt={dt}" / f"{self.part}.parquet"
            os.replace(tmp, final)
            written.append(str(final.relative_to(self.root)))
        return written

    def abort(self) -> None:
        for writer, tmp in self.writers.values():
            writer.close()
            tmp.unlink(missing_ok=True)


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
    writers = _DayWriters(lake_dir, source.name)
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
        report.units = writers.commit()
    except BaseException:
        writers.abort()
        raise
    finally:
        con.close()
    if low is not None:
        # Days of the window that had rows before but have none now.
        for unit in lake.units(lake_dir, "raw"):
            day, name = unit.split("/", 1)
            if name == f"{source.name}.parquet" and day[3:4].isdigit():
                d = date.fromisoformat(day.removeprefix("dt="))
                if low.date() <= d <= high.date() and unit not in report.units:
                    (lake.zone_dir(lake_dir, "raw") / unit).unlink()
    return report, pa.concat_tables(rejects) if rejects else QUARANTINE.empty_table()
