"""File sources and catalogs: landing files -> typed events in the raw lake, untypeable records
-> rejects.

Every record read ends either in the lake or in the returned rejects: ``read == written +
rejected``, checked per file. File sources are incremental by checksum (a file already extracted
unchanged is skipped) and idempotent: a re-read replaces exactly the partition files it covers.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from features.contracts import C, ContractError
from pipelines.sources.readers import (
    FileSource,
    Typed,
    read_event_file,
)
from pipelines.stores import lake


def file_checksum(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def read_catalog_csv(path: Path, id_column: str, required: tuple[str, ...] = ()) -> pa.Table:
    """Read a catalog CSV: ids as trimmed strings (a blank id becomes null), and a null ``tags``
    column for items that have none, so feature SQL can rely on it. Whether ids are present and
    unique, and attributes in their domains, is the catalog suite's call
    (:func:`pipelines.suites.catalog.validate_catalog`).

    Raises:
        ContractError: naming the file and the missing column, or the file, line and column
            counts of every ragged row (a catalog is a snapshot: it is taken whole or not at all).
    """
    ragged: list[str] = []

    def _ragged(row: pacsv.InvalidRow) -> str:
        line = f"line {row.number}" if row.number is not None else "a line"
        ragged.append(
            f"{line}: expected {row.expected_columns} columns, got {row.actual_columns}: "
            f"{row.text[:80]!r}"
        )
        return "skip"

    # One thread: pyarrow knows line numbers only then (catalogs are small).
    table = pacsv.read_csv(
        path,
        read_options=pacsv.ReadOptions(use_threads=False),
        parse_options=pacsv.ParseOptions(invalid_row_handler=_ragged),
    )
    if ragged:
        more = f" (and {len(ragged) - 3} more)" if len(ragged) > 3 else ""
        raise ContractError(f"{path}: " + "; ".join(ragged[:3]) + more)
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
        self.add_counts(typed.events.num_rows, typed.rejects)

    def add_counts(self, n_events: int, rejects: pa.Table) -> None:
        """Count ``n_events`` written and ``rejects`` (with their reasons)."""
        self.rows_read += n_events + rejects.num_rows
        self.rows_written += n_events
        self.rows_rejected += rejects.num_rows
        reasons = pc.value_counts(rejects.column(C.reason)).to_pylist()
        for entry in reasons:
            key = str(entry["values"])
            self.rejected_by_reason[key] = self.rejected_by_reason.get(key, 0) + entry["counts"]


def part_name(source: str, path: Path) -> str:
    """Lake part of a source file: ``<source>--<file name without extensions>``."""
    return f"{source}--{path.name.split('.', 1)[0]}"


@dataclass(frozen=True)
class Extracted:
    """What extracting one file left to record: its events are in the lake already (this is
    small enough to return from a worker)."""

    n_events: int
    rejects: pa.Table
    units: list[str]  # the partition files written, relative to the zone

    @property
    def n_read(self) -> int:
        return self.n_events + int(self.rejects.num_rows)


def extract_file(
    path: Path, source: FileSource, lake_dir: Path, *, ingested_at: datetime, run_id: str
) -> Extracted:
    """Read one file and replace its part in the raw lake (atomically: running it again
    writes the same files)."""
    typed = read_event_file(path, source, ingested_at=ingested_at, run_id=run_id)
    written = lake.write_part(lake_dir, "raw", part_name(source.name, path), typed.events)
    root = lake.zone_dir(lake_dir, "raw")
    return Extracted(
        typed.events.num_rows, typed.rejects, [str(p.relative_to(root)) for p in written]
    )


def file_date(path: Path) -> date | None:
    """The first YYYY-MM-DD in a file name, if any (used to pick files of a backfill range)."""
    match = re.search(r"(\d{4}-\d{2}-\d{2})", path.name)
    return date.fromisoformat(match.group(1)) if match else None
