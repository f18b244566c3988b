"""The Parquet lake: Hive-partitioned event zones and catalog snapshots.

Layout::

    <lake>/raw/events/dt=YYYY-MM-DD/<part>.parquet     what was extracted, typed, with lineage
    <lake>/clean/events/dt=YYYY-MM-DD/<part>.parquet   what passed validation (same file names,
                                                       plus released-<run>.parquet from quarantine)
    <lake>/catalog/{users,items}.parquet               latest catalog snapshots
    <lake>/catalog/{users,items}/taken=<t>--run_id=<id>.parquet   the snapshot of each run
    <lake>/recommendations/run_id=<id>/                 scored lists (pipelines.stores.scored)

A part is named after the source file it came from (``<source>--<file>``) or the database source
(``<source>``), so re-extracting replaces exactly its rows in every partition it touches
(idempotent), and other sources' rows are left alone. One partition file (``dt=.../<part>.parquet``)
is the unit validation tracks. Each file is written beside its final name and renamed into place,
so a crash never leaves a half-written one.

Every path into the lake is built here; stages ask this module for files, never build them.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
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


def check_part(part: str) -> str:
    """A part name is data, never a path or a pattern: one file name, not hidden.

    Raises:
        ValueError: naming the part and what was expected.
    """
    if not part or part.startswith(".") or any(c in part for c in "/\\\0") or part != part.strip():
        raise ValueError(
            f"part name {part!r}: expected a plain file name (no '/', '\\', NUL, leading '.' "
            "or surrounding spaces)"
        )
    return part


def part_paths(lake: Path, zone: str, part: str) -> list[Path]:
    """Every partition file of one part in a zone. The name is matched literally: a file named
    ``events-2026-10-0[1-9]`` is that file, never a pattern over its neighbours."""
    name = f"{check_part(part)}.parquet"
    root = zone_dir(lake, zone)
    if not root.exists():
        return []
    return sorted(
        p for d in root.iterdir() if d.name.startswith("dt=") if (p := d / name).is_file()
    )


def _atomic_write(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class DayWriters:
    """Writes one part split by UTC date of ``event_ts``, batch after batch (bounded memory): one
    Parquet writer per date, beside the final file; :meth:`commit` renames them all into place,
    :meth:`abort` removes them."""

    def __init__(self, lake: Path, zone: str, part: str) -> None:
        self.root = zone_dir(lake, zone)
        self.part = check_part(part)
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

    def commit(self) -> list[Path]:
        """Rename every file into place; the partition files written, by date."""
        written = []
        for dt, (writer, tmp) in sorted(self.writers.items()):
            writer.close()
            final = self.root / f"dt={dt}" / f"{self.part}.parquet"
            os.replace(tmp, final)
            written.append(final)
        return written

    def abort(self) -> None:
        for writer, tmp in self.writers.values():
            writer.close()
            tmp.unlink(missing_ok=True)


def write_part(lake: Path, zone: str, part: str, events: pa.Table) -> list[Path]:
    """Replace ``part`` in ``zone`` with ``events``, split by UTC date of ``event_ts``.

    Returns the partition files written (one per date present). A date this part covered before
    but no longer does loses its file, so a rerun never leaves stale rows behind.
    """
    events = conform(events, EVENTS, f"{zone} events part {part!r}")
    writers = DayWriters(lake, zone, part)
    try:
        writers.write(events)
        written = writers.commit()
    except BaseException:
        writers.abort()
        raise
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


STAGED = ".staged"
"""Suffix of a partition file staged by a run: ``.<file>.<run id>.staged`` beside its final name."""


@dataclass(frozen=True)
class StagedUnit:
    """A partition file written beside its final name: :meth:`commit` renames it into place,
    :meth:`abort` removes it. Its name carries the run id, so a kill between the run's commit
    and the renames is finished by :func:`finish_staged`."""

    tmp: Path
    final: Path

    def commit(self) -> Path:
        os.replace(self.tmp, self.final)
        return self.final

    def abort(self) -> None:
        self.tmp.unlink(missing_ok=True)


def stage_unit(lake: Path, zone: str, unit: str, events: pa.Table, *, run_id: str) -> StagedUnit:
    """Write one partition file aside for ``run_id``, to be renamed into place later
    (:class:`StagedUnit`)."""
    final = zone_dir(lake, zone) / unit
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.{check_part(run_id)}{STAGED}"
    pq.write_table(conform(events, EVENTS, f"{zone} events {unit}"), tmp, compression="zstd")
    return StagedUnit(tmp, final)


def finish_staged(lake: Path, zone: str, committed: set[str]) -> tuple[list[str], list[str]]:
    """Finish what a killed run staged in ``zone``: files of a run in ``committed`` (its verdict
    is in the warehouse) are renamed into place (rolled forward), the others removed. Returns
    (units rolled forward, units dropped)."""
    root = zone_dir(lake, zone)
    forward, dropped = [], []
    for tmp in sorted(root.glob(f"dt=*/.*{STAGED}")):
        name, _, run_id = tmp.name[1 : -len(STAGED)].rpartition(".parquet.")
        unit = f"{tmp.parent.name}/{name}.parquet"
        if run_id in committed:
            os.replace(tmp, root / unit)
            forward.append(unit)
        else:
            tmp.unlink()
            dropped.append(unit)
    return forward, dropped


def sweep_temporary(lake: Path) -> list[Path]:
    """Remove the ``.*.tmp`` files a killed writer left beside their final names (call while
    holding the run lock: no other writer is live). Returns what was removed."""
    stale = sorted(lake.rglob(".*.tmp")) if lake.exists() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


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


def checksums(lake: Path, zone: str) -> dict[str, str]:
    """Every partition file of a zone -> the SHA-256 of its bytes (what a model was fitted on)."""
    root = zone_dir(lake, zone)
    out = {}
    for path in sorted(root.glob("dt=*/*.parquet")):
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        out[str(path.relative_to(root))] = digest.hexdigest()
    return out


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


def relative_units(lake: Path, zone: str, paths: list[Path]) -> list[str]:
    """Partition files as units (``dt=.../<part>.parquet``, relative to the zone)."""
    root = zone_dir(lake, zone)
    return [str(p.relative_to(root)) for p in paths]


def unit_path(lake: Path, zone: str, unit: str) -> Path:
    """The file of one unit in a zone."""
    return zone_dir(lake, zone) / unit


def remove_unit(lake: Path, zone: str, unit: str) -> None:
    """Delete one partition file (a day a re-read window no longer has)."""
    unit_path(lake, zone, unit).unlink(missing_ok=True)


def unit_date(unit: str) -> date | None:
    """The event date of a unit (None for the ``dt=__empty__`` marker)."""
    day = unit.split("/", 1)[0].removeprefix("dt=")
    return date.fromisoformat(day) if day[:1].isdigit() else None


def has_clean_events(lake: Path) -> bool:
    """Whether the clean zone holds any dated partition file."""
    return any(zone_dir(lake, "clean").glob("dt=[0-9]*/*.parquet"))


def _query(sql: str, params: list[object]) -> list[tuple[object, ...]]:
    con = duckdb.connect()  # in memory: the lake only, no lock on the warehouse
    try:
        con.execute("set TimeZone = 'UTC'")
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def latest_event_ts(lake: Path) -> datetime:
    """Newest ``event_ts`` in the clean zone.

    Raises:
        FileNotFoundError: the clean zone is empty (run extract and validate first).
    """
    if not has_clean_events(lake):
        raise FileNotFoundError(
            f"{zone_dir(lake, 'clean')}: no clean events; run `recs run extract` "
            "and `recs run validate` first"
        )
    value = _query("select max(event_ts) from read_parquet(?)", [events_glob(lake, "clean")])[0][0]
    assert isinstance(value, datetime)
    return value


def clean_event_ids(lake: Path) -> pl.Series:
    """Every event id in the clean zone."""
    if not has_clean_events(lake):
        return pl.Series(C.event_id, [], dtype=pl.String)
    rows = _query("select distinct event_id from read_parquet(?)", [events_glob(lake, "clean")])
    return pl.Series(C.event_id, [i for (i,) in rows], dtype=pl.String)


@dataclass(frozen=True)
class CleanHistory:
    """What the clean lake held before a batch; all None when it held nothing."""

    dates: frozenset[date] | None
    trailing_daily_volume: float | None
    users: frozenset[str] | None
    items: frozenset[str] | None


def clean_history(lake: Path, *, exclude: list[str], before: datetime | None) -> CleanHistory:
    """Dates, mean daily volume of the 7 dates before ``before``, and the users and items seen,
    over the clean zone minus the partition files in ``exclude`` (the ones being re-validated)."""
    root = zone_dir(lake, "clean")
    skip = set(exclude)
    files = [
        str(root / u)
        for u in units(lake, "clean")
        if u not in skip and not u.startswith("dt=__empty__/")
    ]
    if not files:
        return CleanHistory(None, None, None, None)
    con = duckdb.connect()
    try:
        con.execute("set TimeZone = 'UTC'")
        con.read_parquet(files).select("user_id, item_id, event_ts::date as day").to_table("h")
        days = dict(con.execute("select day, count(*) from h group by day").fetchall())
        users = frozenset(u for (u,) in con.execute("select distinct user_id from h").fetchall())
        items = frozenset(i for (i,) in con.execute("select distinct item_id from h").fetchall())
    finally:
        con.close()
    first_new = before.date() if before is not None else None
    trailing = sorted(d for d in days if first_new is None or d < first_new)[-7:]
    volume = sum(days[d] for d in trailing) / len(trailing) if trailing else None
    return CleanHistory(frozenset(days), volume, users, items)


CATALOGS = ("users", "items")


def catalog_path(lake: Path, name: str) -> Path:
    """The latest snapshot of a catalog (``users`` or ``items``)."""
    if name not in CATALOGS:
        raise ValueError(f"catalog {name!r}: expected one of {CATALOGS}")
    return lake / "catalog" / f"{name}.parquet"


def read_catalog(lake: Path, name: str, columns: list[str] | None = None) -> pa.Table | None:
    """The latest snapshot of a catalog, or None before the first extraction."""
    path = catalog_path(lake, name)
    return pq.read_table(path, columns=columns) if path.exists() else None


def _taken(path: Path) -> datetime | None:
    stamp = path.name.split("--", 1)[0].removeprefix("taken=")
    try:
        return datetime.strptime(stamp, "%Y%m%dT%H%M%S%fZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def write_catalog(
    lake: Path, name: str, table: pa.Table, *, run_id: str, taken_at: datetime
) -> Path:
    """Keep this run's snapshot of a catalog (``users`` or ``items``) under
    ``catalog/<name>/taken=<UTC time>--run_id=<id>.parquet`` and make it the latest
    (``catalog/<name>.parquet``)."""
    path = catalog_path(lake, name)
    stamp = taken_at.astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    _atomic_write(table, path.parent / name / f"taken={stamp}--run_id={run_id}.parquet")
    _atomic_write(table, path)
    return path


def catalog_at(lake: Path, name: str, as_of: datetime) -> Path:
    """The snapshot of a catalog in force at ``as_of``: the newest taken at or before it; when
    every snapshot is newer (a backfill to before the first extraction), the oldest one."""
    snapshots = sorted(
        (taken, p)
        for p in (catalog_path(lake, name).parent / name).glob("taken=*.parquet")
        if (taken := _taken(p)) is not None
    )
    if not snapshots:
        return catalog_path(lake, name)
    before = [p for taken, p in snapshots if taken <= as_of]
    return before[-1] if before else snapshots[0][1]
