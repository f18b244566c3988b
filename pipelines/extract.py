"""Extract: landing files -> typed events in the raw lake, unparseable records -> quarantine.

Lines are read as raw text by DuckDB (gzip handled natively), so a malformed line is kept whole
with its file and line number instead of being skipped by a JSON reader. Every line read ends
either in the returned events or in the returned rejects: ``read == written + rejected``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from features.contracts import EVENTS, QUARANTINE, C, ContractError, conform

EVENT_FILE_PATTERNS = ("*.jsonl", "*.jsonl.gz", "*.json.gz", "*.ndjson", "*.ndjson.gz")

# One select: parse each line, keep typed columns, and name why a line cannot be typed.
_PARSE_SQL = r"""
with raw as (
    select filename, row_number() over (partition by filename) as line_no, line
    from read_csv($files, columns = {'line': 'VARCHAR'}, delim = E'\x01', quote = '',
                  escape = '', header = false, filename = true, auto_detect = false,
                  strict_mode = false, null_padding = true)
),
docs as (
    select *, case when json_valid(line) then line::json end as doc from raw
),
typed as (
    select
        filename, line_no, line,
        json_type(doc) as doc_type,
        doc ->> '$.event_id' as event_id,
        doc ->> '$.user_id' as user_id,
        doc ->> '$.item_id' as item_id,
        doc ->> '$.event_type' as event_type,
        doc ->> '$.event_ts' as event_ts_text,
        try_cast(doc ->> '$.event_ts' as timestamptz) as event_ts,
        json_type(doc -> '$.value') as value_type,
        try_cast(doc ->> '$.value' as double) as value,
        doc ->> '$.session_id' as session_id
    from docs
),
final as (
    select
        *,
        case
            when doc_type is null then 'malformed_json'
            when doc_type <> 'OBJECT' then 'not_a_json_object'
            when event_id is null or trim(event_id) = '' then 'missing_event_id'
            when event_ts_text is null then 'missing_event_ts'
            when event_ts is null then 'unparseable_timestamp'
            when value_type is not null
                 and value_type not in ('NULL', 'DOUBLE', 'BIGINT', 'UBIGINT')
                then 'value_not_a_number'
        end as reason
    from typed
)
select * from final
"""


@dataclass(frozen=True)
class ExtractResult:
    """Events typed to the contract and rejected lines, from one or more files."""

    events: pa.Table
    rejects: pa.Table

    @property
    def n_read(self) -> int:
        return int(self.events.num_rows + self.rejects.num_rows)


def file_checksum(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def landing_event_files(landing: Path) -> list[Path]:
    """Event export files in ``<landing>/events``, sorted by name."""
    folder = landing / "events"
    return sorted({p for pattern in EVENT_FILE_PATTERNS for p in folder.glob(pattern)})


def parse_event_file(path: Path, ingested_at: datetime, run_id: str) -> ExtractResult:
    """Type the JSON lines of one file; lines that cannot be typed become rejects.

    Args:
        path: a JSON-lines file, optionally gzip-compressed.
        ingested_at: lineage timestamp (UTC) stamped on every event.
        run_id: the run that rejected a line, stamped on every reject.
    """
    con = duckdb.connect()
    try:
        con.execute("set TimeZone = 'UTC'")
        parsed = con.sql(_PARSE_SQL, params={"files": [str(path)]}).to_arrow_table()
    finally:
        con.close()
    source = path.name
    ok = parsed.filter(pc.is_null(parsed.column("reason")))
    bad = parsed.filter(pc.is_valid(parsed.column("reason")))
    n_ok = ok.num_rows
    events = ok.select(
        [C.event_id, C.user_id, C.item_id, C.event_type, C.event_ts, C.value, C.session_id]
    )
    events = events.append_column(C.source, pa.array([source] * n_ok, pa.string()))
    events = events.append_column(
        C.ingested_at, pa.array([ingested_at] * n_ok, pa.timestamp("us", tz="UTC"))
    )
    rejects = quarantine_rows(
        stage="extract",
        reasons=bad.column("reason"),
        source=source,
        line_no=bad.column("line_no"),
        event_id=bad.column(C.event_id),
        raw=bad.column("line"),
        run_id=run_id,
        at=ingested_at,
    )
    return ExtractResult(conform(events, EVENTS, f"events from {path}"), rejects)


def quarantine_rows(
    *,
    stage: str,
    reasons: pa.ChunkedArray | pa.Array,
    source: str | pa.ChunkedArray | pa.Array,
    line_no: pa.ChunkedArray | pa.Array | None,
    event_id: pa.ChunkedArray | pa.Array,
    raw: pa.ChunkedArray | pa.Array,
    run_id: str,
    at: datetime,
) -> pa.Table:
    """Rows of the quarantine contract; scalar arguments are repeated for every row."""
    n = len(reasons)

    def _col(value: object, type_: pa.DataType) -> pa.Array | pa.ChunkedArray:
        if isinstance(value, pa.Array | pa.ChunkedArray):
            return value
        return pa.array([value] * n, type_)

    table = pa.table(
        {
            "stage": _col(stage, pa.string()),
            C.reason: reasons,
            C.source: _col(source, pa.string()),
            "line_no": _col(line_no, pa.int64()),
            C.event_id: event_id,
            C.raw: raw,
            C.run_id: _col(run_id, pa.string()),
            "quarantined_at": _col(at, pa.timestamp("us", tz="UTC")),
        }
    )
    return conform(table, QUARANTINE, f"quarantine rows of stage {stage!r}")


def read_catalog(path: Path, id_column: str, required: tuple[str, ...] = ()) -> pa.Table:
    """Read a catalog CSV; ids must be present and unique.

    Raises:
        ContractError: naming the file and the missing column, row of a blank id, or duplicate id.
    """
    table = pacsv.read_csv(path)
    for column in (id_column, *required):
        if column not in table.column_names:
            raise ContractError(f"{path}: missing column {column!r}; got {table.column_names}")
    ids = table.column(id_column).cast(pa.string())
    table = table.set_column(table.schema.get_field_index(id_column), id_column, ids)
    blank = pc.or_kleene(pc.is_null(ids), pc.equal(pc.utf8_trim_whitespace(ids), "")).fill_null(
        True
    )
    if pc.any(blank).as_py():
        row = pc.index(blank, True).as_py()
        raise ContractError(f"{path}: row {row + 2} has a blank {id_column!r}")
    if pc.count_distinct(ids).as_py() != table.num_rows:
        counts = pc.value_counts(ids)
        dupes = [v["values"] for v in counts.to_pylist() if v["counts"] > 1][:5]
        raise ContractError(f"{path}: duplicate {id_column!r} values, e.g. {dupes}")
    return table
