"""The Parquet lake: Hive-partitioned event zones and catalog snapshots.

Layout::

    <lake>/raw/events/dt=YYYY-MM-DD/<part>.parquet     what was extracted, typed, with lineage
    <lake>/clean/events/dt=YYYY-MM-DD/<part>.parquet   what passed validation (same file names,
                                                       plus released-<run>.parquet from quarantine)
    <lake>/catalog/{users,items}.parquet               latest catalog snapshots
    <lake>/catalog/{users,items}/run_id=<id>.parquet   the snapshot of each run

A part is named after the source file it came from (``<source>--<file>``) or the database source
(``<source>``), so re-extracting replaces exactly its rows in every partition it touches
(idempotent), and other sources' rows are left alone. One partition file (``dt=.../<part>.parquet``)
is the unit validation tracks. Each file is written beside its final name and renamed into place,
so a crash never leaves a half-written one.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features.contracts import EVENTS, C, conform

RELEASED = "released-"
"""Prefix of clean partition files holding rows released from quarantine."""


def zone_dir(lake: Path, zone: str) -> Path:
    """Directory of an event zone (``raw`` or ``clean``)."""
    return lake / zone / "events"


def part_paths(lake: Path, zone: str, part: str) -> list[Path]:
    """Every partition file of one part in a zone."""
    return sorted(zone_dir(lake, zone).glob(f"dt=*/{part}.parquet"))


def _atomic_write(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_part(lake: Path, zone: str, part: str, events: pa.Table) -> list[Path]:
    """Replace ``part`` in ``zone`` with ``events``, split by UTC date of ``event_ts``.

    Returns the partition files written (one per date present). A date this part covered before
    but no longer does loses its file, so a rerun never leaves stale rows behind.
    """
    events = conform(events, EVENTS, f"{zone} events part {part!r}")
    dates = pc.strftime(events.column(C.event_ts), format="%Y-%m-%d")
    written = []
    for dt in sorted(pc.unique(dates).to_pylist()):
        path = zone_dir(lake, zone) / f"dt={dt}" / f"{part}.parquet"
        _atomic_write(events.filter(pc.equal(dates, dt)), path)
        written.append(path)
    for stale in set(part_paths(lake, zone, part)) - set(written):
        stale.unlink()
    if not written:
        # An all-rejected part still leaves a marker so the run knows it was processed.
        marker = zone_dir(lake, zone) / "dt=__empty__" / f"{part}.parquet"
        _atomic_write(events, marker)
        written.append(marker)
    return written


def read_part(lake: Path, zone: str, part: str) -> pa.Table:
    """All rows of one part in a zone (empty table with the contract schema if none)."""
    paths = part_paths(lake, zone, part)
    if not paths:
        return EVENTS.empty_table()
    return pa.concat_tables([pq.read_table(p, schema=EVENTS) for p in paths])


def write_unit(lake: Path, zone: str, unit: str, events: pa.Table) -> Path:
    """Replace one partition file (``unit`` = ``dt=YYYY-MM-DD/<part>.parquet``) atomically."""
    path = zone_dir(lake, zone) / unit
    _atomic_write(conform(events, EVENTS, f"{zone} events {unit}"), path)
    return path


def read_unit(lake: Path, zone: str, unit: str) -> pa.Table:
    """One partition file, typed to the contract."""
    return pq.read_table(zone_dir(lake, zone) / unit, schema=EVENTS)


def read_units(lake: Path, zone: str, units: list[str], *, unit_column: str) -> pl.DataFrame:
    """Several partition files in one parallel read; ``unit_column`` (categorical) holds each
    row's file path, so rows can be written back to their own file."""
    files = [str(zone_dir(lake, zone) / unit) for unit in units]
    frame = pl.read_parquet(
        files, hive_partitioning=False, include_file_paths=unit_column, schema=pl.Schema(EVENTS)
    )
    return frame.with_columns(pl.col(unit_column).cast(pl.Categorical))


def units(lake: Path, zone: str) -> dict[str, float]:
    """Every partition file of a zone (``dt=.../<part>.parquet``) -> modification time."""
    root = zone_dir(lake, zone)
    return {
        str(path.relative_to(root)): path.stat().st_mtime for path in root.glob("dt=*/*.parquet")
    }


def pending_units(lake: Path) -> list[str]:
    """Raw partition files not validated yet: no clean counterpart, or a newer raw file.

    Clean files whose raw file is gone (a re-extraction shrank a part) are removed here, so the
    clean zone never holds rows the raw zone no longer has.
    """
    raw, clean = units(lake, "raw"), units(lake, "clean")
    for orphan in clean.keys() - raw.keys():
        if not orphan.split("/", 1)[1].startswith(RELEASED):  # released rows have no raw file
            (zone_dir(lake, "clean") / orphan).unlink()
    return sorted(u for u, mtime in raw.items() if u not in clean or clean[u] < mtime)


def events_glob(lake: Path, zone: str) -> str:
    """Glob DuckDB reads a zone with (``hive_partitioning`` adds ``dt``)."""
    # dt=[0-9]*: real dates only, not the dt=__empty__ marker of an all-rejected part.
    return str(zone_dir(lake, zone) / "dt=[0-9]*" / "*.parquet")


def write_catalog(lake: Path, name: str, table: pa.Table, *, run_id: str) -> Path:
    """Keep this run's snapshot of a catalog (``users`` or ``items``) under
    ``catalog/<name>/run_id=<id>.parquet`` and make it the latest (``catalog/<name>.parquet``)."""
    _atomic_write(table, lake / "catalog" / name / f"run_id={run_id}.parquet")
    path = lake / "catalog" / f"{name}.parquet"
    _atomic_write(table, path)
    return path
