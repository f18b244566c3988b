"""Extract stage: every configured source into the raw lake; catalogs into lake snapshots;
records that cannot be typed into the warehouse ``quarantine`` table with a reason."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
from tqdm import tqdm

from features.contracts import C
from pipelines.sources.files import (
    Extracted,
    SourceReport,
    extract_file,
    file_checksum,
    file_date,
    part_name,
    read_catalog_csv,
)
from pipelines.sources.postgres import extract_postgres, postgres_window
from pipelines.sources.readers import FileSource, PostgresSource
from pipelines.stores import Stores, cluster, lake, warehouse
from pipelines.suites.catalog import validate_catalog
from pipelines.suites.runner import ValidationError


@dataclass(frozen=True)
class ExtractReport:
    """Counts of one extraction over all sources; ``rows_read == rows_written + rows_rejected``."""

    sources: list[SourceReport]
    n_users: int
    n_items: int

    @property
    def units(self) -> list[str]:
        return [u for s in self.sources for u in s.units]

    @property
    def files_skipped(self) -> int:
        return sum(s.files_skipped for s in self.sources)

    @property
    def rows_read(self) -> int:
        return sum(s.rows_read for s in self.sources)

    @property
    def rows_written(self) -> int:
        return sum(s.rows_written for s in self.sources)

    @property
    def rows_rejected(self) -> int:
        return sum(s.rows_rejected for s in self.sources)

    @property
    def rejected_by_reason(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.sources:
            for reason, n in s.rejected_by_reason.items():
                out[reason] = out.get(reason, 0) + n
        return dict(sorted(out.items()))


def _manifest_row(
    run_id: str, source: str, file: str, checksum: str | None, report: SourceReport | Extracted,
    at: datetime, low: datetime | None = None, high: datetime | None = None, backfill: bool = False,
) -> pa.Table:  # fmt: skip
    if isinstance(report, Extracted):
        read, written, rejected = report.n_read, report.n_events, report.rejects.num_rows
    else:
        read, written, rejected = report.rows_read, report.rows_written, report.rows_rejected
    ts = pa.timestamp("us", tz="UTC")
    return pa.table(
        {
            "run_id": [run_id],
            "source": [source],
            "file": [file],
            "checksum": pa.array([checksum], pa.string()),
            "watermark_low": pa.array([low], ts),
            "watermark_high": pa.array([high], ts),
            "backfill": [backfill],
            "rows_read": [read],
            "rows_written": [written],
            "rows_rejected": [rejected],
            "extracted_at": pa.array([at], ts),
        }
    )


def extract(
    stores: Stores,
    *,
    sources: Sequence[FileSource | PostgresSource],
    run_id: str,
    ingested_at: datetime,
    force: bool = False,
    since: date | None = None,
    until: date | None = None,
    dask_address: str | None = None,
) -> ExtractReport:
    """Sources -> raw lake; catalogs -> lake snapshots; untypeable records -> quarantine.

    A file source's files are extracted one shard per file, on the Dask cluster at
    ``dask_address`` when given (:mod:`pipelines.stores.cluster`), and committed in file order:
    the same lake files and quarantine either way.

    A file already extracted with the same checksum is skipped unless ``force`` or (backfill) its
    name carries a date in ``[since, until]``. A database source reads from its last watermark minus
    its lookback, or exactly ``[since, until]`` for a backfill (the watermark is then kept).
    """
    lake.sweep_temporary(stores.lake)  # what a killed writer left beside its final names
    users = read_catalog_csv(stores.landing / "users.csv", C.user_id)
    items = read_catalog_csv(stores.landing / "items.csv", C.item_id, required=(C.available,))
    for name, id_column, table in (("users", C.user_id, users), ("items", C.item_id, items)):
        failures = validate_catalog(
            table, name=name, id_column=id_column, previous=lake.read_catalog(stores.lake, name),
            gx_root=stores.gx_root,
        )  # fmt: skip
        if failures:
            raise ValidationError(str(stores.landing / f"{name}.csv"), failures)
    for name, table in (("users", users), ("items", items)):
        lake.write_catalog(stores.lake, name, table, run_id=run_id, taken_at=ingested_at)
    backfill = since is not None or until is not None
    reports = []
    with warehouse.connect(stores.warehouse) as con:
        done = warehouse.extracted_checksums(con)
        marks = warehouse.watermarks(con)
        for source in sources:
            if isinstance(source, FileSource):
                report = _extract_file_source(
                    con, stores, source, done=done, force=force, since=since, until=until,
                    run_id=run_id, ingested_at=ingested_at, dask_address=dask_address,
                )  # fmt: skip
            else:
                if backfill:
                    low = _midnight(since) if since else None
                    high = _midnight(until) + timedelta(days=1) if until else ingested_at
                else:
                    lookback = timedelta(hours=source.lookback_hours)
                    low, high = postgres_window(marks.get(source.name), lookback, ingested_at)
                report, rejects = extract_postgres(
                    source, stores.lake, low=low, high=high, ingested_at=ingested_at, run_id=run_id
                )
                with warehouse.transaction(con):  # rejects and the window's row: one commit
                    _replace_rejected_rows(con, rejects)
                    warehouse.append(
                        con, "extractions",
                        _manifest_row(run_id, source.name, source.table, None, report,
                                      ingested_at, low, high, backfill),
                    )  # fmt: skip
            reports.append(report)
    return ExtractReport(reports, users.num_rows, items.num_rows)


def _extract_file_source(
    con: duckdb.DuckDBPyConnection,
    stores: Stores,
    source: FileSource,
    *,
    done: dict[tuple[str, str], str],
    force: bool,
    since: date | None,
    until: date | None,
    run_id: str,
    ingested_at: datetime,
    dask_address: str | None = None,
) -> SourceReport:
    """Every new or changed file of a file source (or, for a backfill, every file dated in
    ``[since, until]``) into the raw lake, its rejects and manifest row into the warehouse."""
    report = SourceReport(source.name)
    files = source.files(stores.landing / "events")
    if not files:
        raise FileNotFoundError(
            f"source {source.name!r}: no files matching {source.patterns()} in "
            f"{source.path or stores.landing / 'events'}; run `recs generate`, "
            "`recs import ...` or drop exports there"
        )
    backfill = since is not None or until is not None
    todo: list[tuple[Path, str]] = []
    for path in files:
        checksum = file_checksum(path)
        day = file_date(path)
        in_range = (
            backfill
            and day is not None
            and (since is None or day >= since)
            and (until is None or day <= until)
        )
        if not (force or in_range) and done.get((source.name, path.name)) == checksum:
            report.files_skipped += 1
            continue
        todo.append((path, checksum))
    # One shard per file (on the cluster when there is one), committed in file order.
    shared = (source, stores.lake, ingested_at, run_id)
    with cluster.connect(dask_address) as client:
        results = cluster.map_in_order(client, _extract_one, shared, [p for p, _ in todo])
        # A progress bar in a terminal (none when stderr is not one: Prefect logs, CI).
        bar = tqdm(results, total=len(todo), desc=f"extract {source.name}", unit="file",
                   disable=None, leave=False)  # fmt: skip
        for (path, checksum), extracted in zip(todo, bar, strict=True):
            report.add_counts(extracted.n_events, extracted.rejects)
            report.units.extend(extracted.units)
            report.files_read += 1
            # The file's rejects replace those of any earlier extraction of it (a rerun after
            # a kill, --force, a backfill), in one transaction with its manifest row.
            part = part_name(source.name, path)
            n = extracted.rejects.num_rows
            rejects = extracted.rejects.append_column("part", pa.array([part] * n))
            with warehouse.transaction(con):
                warehouse.replace_quarantine(con, "extract", [part], rejects)
                warehouse.append(
                    con, "extractions",
                    _manifest_row(run_id, source.name, path.name, checksum, extracted,
                                  ingested_at),
                )  # fmt: skip
    return report


def _extract_one(shared: tuple[FileSource, Path, datetime, str], path: Path) -> Extracted:
    """One shard of a file source's extraction: one landing file into the raw lake."""
    source, lake_dir, ingested_at, run_id = shared
    return extract_file(path, source, lake_dir, ingested_at=ingested_at, run_id=run_id)


def _replace_rejected_rows(con: duckdb.DuckDBPyConnection, rejects: pa.Table) -> None:
    """A database window's rejects replace the same rows rejected before: windows overlap (the
    lookback, a backfill), and a row read twice is one reject, keyed by source and raw row."""
    if not rejects.num_rows:
        return
    if warehouse.table_exists(con, "quarantine"):
        con.register("_rejects", rejects)
        try:
            con.execute(
                "delete from quarantine where stage = 'extract' and exists (select 1 from "
                "_rejects r where r.source = quarantine.source and r.raw = quarantine.raw)"
            )
        finally:
            con.unregister("_rejects")
    warehouse.append(con, "quarantine", rejects)


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)
