"""Event sources: exported files (JSON lines, CSV, Parquet; gzip or not) and PostgreSQL tables,
each with a declared column mapping to the events contract.

Every source is first *staged* as text columns (one row per input record, with its raw payload and
where it came from), then typed by one shared DuckDB step (:data:`_TYPE_SQL`) that names the reason
for any record it cannot type. So an export with its own column names, timestamp format or event
type vocabulary is read without code changes, and every format rejects the same way.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import tempfile
import zlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from features.contracts import EVENTS, C, conform, quarantine_rows

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_ .\-]*$")


def quote_identifier(identifier: str) -> str:
    """A column name as a quoted SQL identifier (names come from configuration, not data)."""
    if not _IDENT.match(identifier):
        raise ValueError(f"column name {identifier!r}: expected letters, digits, _ . - or space")
    return '"' + identifier.replace('"', '""') + '"'


class ColumnMapping(BaseModel):
    """Which source column feeds each contract column, and how to read it.

    ``event_id = None`` derives a deterministic id from the record's fields (so a re-import is
    idempotent); ``event_type = None`` uses ``default_event_type`` for every record.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: str | None = C.event_id
    user_id: str = C.user_id
    item_id: str = C.item_id
    event_type: str | None = C.event_type
    event_ts: str = C.event_ts
    value: str | None = C.value
    session_id: str | None = C.session_id
    ts_format: str = Field(
        "iso", description="iso | epoch_s | epoch_ms | a strptime pattern such as %d/%m/%Y %H:%M"
    )
    event_types: dict[str, str] = Field(
        default_factory=dict, description="source event type -> contract event type"
    )
    default_event_type: str | None = None

    @field_validator("event_id", "event_type", "value", "session_id", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        # TOML has no null: an empty name says the source has no such column.
        return None if value == "" else value

    @model_validator(mode="after")
    def _needs_a_type(self) -> ColumnMapping:
        if self.event_type is None and not self.default_event_type:
            raise ValueError("mapping has no event_type column: set default_event_type")
        return self

    def source_columns(self) -> dict[str, str | None]:
        """Contract column -> source column (None where the source has none)."""
        return {
            C.event_id: self.event_id,
            C.user_id: self.user_id,
            C.item_id: self.item_id,
            C.event_type: self.event_type,
            C.event_ts: self.event_ts,
            C.value: self.value,
            C.session_id: self.session_id,
        }


SOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_]*(-[A-Za-z0-9_]+)*")
"""A source name is an identifier (letters, digits, ``_``, single ``-``): it names lake files
(``<source>--<file>``), so it is never a path."""


def _source_name(name: str) -> str:
    if len(name) > 64 or not SOURCE_NAME.fullmatch(name):
        raise ValueError(
            f"source name {name!r}: expected letters, digits, '_' and single '-' "
            "(at most 64, starting with a letter or digit)"
        )
    return name


class FileSource(BaseModel):
    """Export files in a folder."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["files"] = "files"
    name: Annotated[str, AfterValidator(_source_name)] = "landing"
    path: Path | None = Field(None, description="folder of files (default: <landing>/events)")
    format: Literal["jsonl", "csv", "parquet"] = "jsonl"
    glob: str | None = Field(None, description="file pattern (default by format)")
    csv_delimiter: str = ","
    mapping: ColumnMapping = ColumnMapping()

    def patterns(self) -> tuple[str, ...]:
        if self.glob:
            return (self.glob,)
        return {
            "jsonl": ("*.jsonl", "*.jsonl.gz", "*.json.gz", "*.ndjson", "*.ndjson.gz"),
            "csv": ("*.csv", "*.csv.gz", "*.tsv", "*.tsv.gz"),
            "parquet": ("*.parquet",),
        }[self.format]

    def files(self, default_folder: Path) -> list[Path]:
        """The files of this source, sorted by name."""
        folder = self.path or default_folder
        return sorted({p for pattern in self.patterns() for p in folder.glob(pattern)})


class PostgresSource(BaseModel):
    """A PostgreSQL table read incrementally by a watermark on its event-time column."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["postgres"] = "postgres"
    name: Annotated[str, AfterValidator(_source_name)]
    url: str = Field(description="postgresql://user@host:port/db")
    table: str = Field(description="table or schema.table")
    mapping: ColumnMapping = ColumnMapping()
    lookback_hours: float = Field(24.0, ge=0, description="re-read window for late arrivals")
    batch_rows: int = Field(250_000, ge=1000, description="rows per Arrow batch")


Source = Annotated[FileSource | PostgresSource, Field(discriminator="kind")]


@dataclass(frozen=True)
class Typed:
    """Events typed to the contract and the records that could not be, from one staged input."""

    events: pa.Table
    rejects: pa.Table

    @property
    def n_read(self) -> int:
        return int(self.events.num_rows + self.rejects.num_rows)


# Staged input: one row per record, all text: source, line_no, raw (may be null: rebuilt from the
# fields), format_error (a record the reader could not split), and the seven contract columns.
_TYPE_SQL = """
with staged as (
    select * from staged_input
),

mapped as (
    select
        staged.*,
        nullif(trim(staged.user_id), '') as clean_user_id,
        nullif(trim(staged.item_id), '') as clean_item_id,
        coalesce(type_map.dst, staged.event_type) as mapped_type,
        {ts_expr} as parsed_ts,
        try_cast(nullif(trim(value), '') as double) as parsed_value
    from staged
    left join type_map on staged.event_type = type_map.src
),

final as (
    select
        *,
        case
            when format_error is not null then format_error
            when event_id is null or trim(event_id) = '' then 'missing_event_id'
            when event_ts is null or trim(event_ts) = '' then 'missing_event_ts'
            when parsed_ts is null then 'unparseable_timestamp'
            -- No calendar date a lake partition or a nanosecond clock can hold: refused here,
            -- so it never makes a partition (validation then bounds the plausible range).
            when parsed_ts < TIMESTAMPTZ '1900-01-01 00:00:00+00'
                or parsed_ts >= TIMESTAMPTZ '2262-01-01 00:00:00+00'
                then 'timestamp_out_of_range'
            when nullif(trim(value), '') is not null and parsed_value is null
                then 'value_not_a_number'
            -- NaN and infinities (JSON's non-standard NaN/Infinity, "nan", "inf", 1e400):
            -- no weight or rating means them, and every sum they enter becomes one.
            when isnan(parsed_value) or isinf(parsed_value) then 'value_not_finite'
        end as reason
    from mapped
)

select * from final
"""

_TS_EXPR = {
    "iso": "try_cast(event_ts as timestamptz)",
    "epoch_s": "to_timestamp(try_cast(event_ts as double))",
    "epoch_ms": "to_timestamp(try_cast(event_ts as double) / 1000.0)",
}


def type_staged(
    con: duckdb.DuckDBPyConnection,
    staged: duckdb.DuckDBPyRelation | pa.Table,
    mapping: ColumnMapping,
    *,
    ingested_at: datetime,
    run_id: str,
) -> Typed:
    """Type staged records (see :data:`_TYPE_SQL`) into events and rejects."""
    con.execute("set TimeZone = 'UTC'")
    con.register("staged_input", staged)
    pairs = sorted(mapping.event_types.items())
    con.register(
        "type_map",
        pa.table({"src": [s for s, _ in pairs], "dst": [d for _, d in pairs]},
                 schema=pa.schema([("src", pa.string()), ("dst", pa.string())])),
    )  # fmt: skip
    ts_expr = _TS_EXPR.get(mapping.ts_format, "try_strptime(event_ts, $ts_format)::timestamptz")
    params = {} if mapping.ts_format in _TS_EXPR else {"ts_format": mapping.ts_format}
    try:
        table = con.sql(_TYPE_SQL.format(ts_expr=ts_expr), params=params).to_arrow_table()
    finally:
        con.unregister("staged_input")
        con.unregister("type_map")
    ok = table.filter(pc.is_null(table.column("reason")))
    bad = table.filter(pc.is_valid(table.column("reason")))
    n = ok.num_rows
    events = pa.table(
        {
            C.event_id: ok.column(C.event_id),
            C.user_id: ok.column("clean_user_id"),
            C.item_id: ok.column("clean_item_id"),
            C.event_type: ok.column("mapped_type"),
            C.event_ts: ok.column("parsed_ts"),
            C.value: ok.column("parsed_value"),
            C.session_id: ok.column(C.session_id),
            C.source: ok.column(C.source),
            C.ingested_at: pa.array([ingested_at] * n, pa.timestamp("us", tz="UTC")),
        }
    )
    rejects = quarantine_rows(
        stage="extract",
        reasons=bad.column("reason"),
        source=bad.column(C.source),
        line_no=bad.column("line_no").cast(pa.int64()),
        event_id=bad.column(C.event_id),
        raw=pc.if_else(pc.is_valid(bad.column(C.raw)), bad.column(C.raw), _fields_json(bad)),
        run_id=run_id,
        at=ingested_at,
    )
    return Typed(conform(events, EVENTS, "typed events"), rejects)


def _fields_json(table: pa.Table) -> pa.Array:
    """The staged text fields of each row as a JSON object (the raw payload of a record that
    came without one, e.g. a database row)."""
    names = list(ColumnMapping().source_columns())
    rows = table.select(names).to_pylist()
    return pa.array([json.dumps(r) for r in rows], pa.string())


def _derived_id(source_name: str, cols: dict[str, str]) -> str:
    """Deterministic event id from the record's fields (for sources without one)."""
    parts = ", ".join(
        f"coalesce(({cols[c]})::varchar, '')"
        for c in (C.user_id, C.item_id, C.event_type, C.event_ts, C.value)
    )
    return f"'{_literal(source_name)}-' || md5(concat_ws('|', {parts}))"


def _literal(text: str) -> str:
    return text.replace("'", "''")


def _select_fields(mapping: ColumnMapping, ref: str, source_name: str) -> str:
    """Select list of the seven contract columns as text. ``ref`` turns a quoted source column
    into an expression (``doc ->> '$.{}'`` for JSON, ``{}`` for tables)."""
    cols: dict[str, str] = {}
    for contract, column in mapping.source_columns().items():
        cols[contract] = ref.format(quote_identifier(column)) if column else "null"
    if mapping.event_type is None:
        cols[C.event_type] = "$default_event_type"
    if mapping.event_id is None:
        cols[C.event_id] = _derived_id(source_name, cols)
    return ",\n        ".join(f"({expr})::varchar as {name}" for name, expr in cols.items())


def _params(mapping: ColumnMapping) -> dict[str, object]:
    return {"default_event_type": mapping.default_event_type} if mapping.event_type is None else {}


GLOB_CHARACTERS = frozenset("*?[]{}")


def literal_path(path: Path) -> Path:
    """A path DuckDB reads as exactly this file. DuckDB expands ``*``, ``?``, ``[...]`` and
    ``{...}`` in every path it is given, so a file named ``events-2026-10-0[1-9].jsonl`` would be
    read as the nine files it matches; such a file is read through a symlink with a plain name
    (in the temp folder, named by a hash of the path, keeping the suffixes that say its format
    and compression)."""
    if not GLOB_CHARACTERS & set(str(path)):
        return path
    folder = Path(tempfile.gettempdir()) / f"recs-literal-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:24]
    link = folder / (digest + "".join(path.suffixes[-2:]))
    if not (link.is_symlink() and link.resolve() == path.resolve()):
        tmp = folder / f".{digest}.{os.getpid()}.tmp"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(path.resolve())
        os.replace(tmp, link)
    return link


def stage_jsonl(
    con: duckdb.DuckDBPyConnection, path: Path, source: FileSource, name: str | None = None
) -> duckdb.DuckDBPyRelation:
    """One row per line (read as text, so a malformed line is kept whole with its number).
    ``name`` is the file name recorded as the source (default: the path's)."""
    fields = _select_fields(source.mapping, "doc ->> '$.{}'", source.name)
    sql = f"""
    with raw as (
        select row_number() over () as line_no, line
        from read_csv($path, columns = {{'line': 'VARCHAR'}}, delim = E'\\x01', quote = '',
                      escape = '', header = false, auto_detect = false, strict_mode = false,
                      null_padding = true)
    ),
    docs as (
        select *, case when json_valid(line) then line::json end as parsed from raw
    ),
    objects as (
        select *, case when json_type(parsed) = 'OBJECT' then parsed end as doc from docs
    )
    select
        $name as source,
        line_no,
        line as raw,
        case
            when parsed is null then 'malformed_json'
            when doc is null then 'not_a_json_object'
        end as format_error,
        {fields}
    from objects
    """
    return con.sql(
        sql,
        params={
            "path": str(literal_path(path)),
            "name": name or path.name,
            **_params(source.mapping),
        },
    )


def stage_csv(
    con: duckdb.DuckDBPyConnection, path: Path, source: FileSource
) -> duckdb.DuckDBPyRelation:
    """One row per CSV record, all text. Lines DuckDB cannot split (wrong column count, broken
    quoting) come from its reject tables with their line number, raw text and error."""
    fields = _select_fields(source.mapping, "{}", source.name)
    rejects_fields = ",\n        ".join(
        f"null::varchar as {name}" for name in ColumnMapping().source_columns()
    )
    sql = f"""
    with rows as (
        select * from read_csv($path, all_varchar = true, header = true, delim = $delim,
                               store_rejects = true, rejects_table = 'csv_reject_errors',
                               rejects_scan = 'csv_reject_scans')
    ),
    good as (
        select
            $name as source,
            row_number() over () + 1 as line_no,
            null::varchar as raw,
            null::varchar as format_error,
            {fields}
        from rows
    )
    select * from good
    """
    literal = str(literal_path(path))
    good = con.sql(
        sql, params={"path": literal, "name": path.name, "delim": source.csv_delimiter,
                     **_params(source.mapping)},
    ).to_arrow_table()  # fmt: skip
    bad = con.sql(
        f"""
        select
            $name as source,
            line::bigint as line_no,
            any_value(csv_line) as raw,
            'malformed_csv: ' || string_agg(distinct error_type, ', ') as format_error,
            {rejects_fields}
        from csv_reject_errors
        group by line
        order by line
        """,
        params={"name": path.name},
    ).to_arrow_table()
    con.execute("drop table if exists csv_reject_errors; drop table if exists csv_reject_scans")
    return con.from_arrow(pa.concat_tables([good, bad.cast(good.schema)]))


def stage_parquet(
    con: duckdb.DuckDBPyConnection, path: Path, source: FileSource
) -> duckdb.DuckDBPyRelation:
    """One row per Parquet row, its mapped columns as text."""
    fields = _select_fields(source.mapping, "{}", source.name)
    sql = f"""
    select
        $name as source,
        row_number() over () as line_no,
        null::varchar as raw,
        null::varchar as format_error,
        {fields}
    from read_parquet($path)
    """
    return con.sql(
        sql,
        params={"path": str(literal_path(path)), "name": path.name, **_params(source.mapping)},
    )


STAGERS = {"jsonl": stage_jsonl, "csv": stage_csv, "parquet": stage_parquet}


MAX_LINE_BYTES = 1 << 20
"""A JSON line longer than this (1 MiB) is quarantined as ``line_too_long`` (its first KiB kept)."""

_UNREADABLE = (duckdb.Error, OSError, EOFError, zlib.error, UnicodeDecodeError)


def read_event_file(path: Path, source: FileSource, *, ingested_at: datetime, run_id: str) -> Typed:
    """Read one export file of ``source`` into typed events and rejects.

    What cannot be read is quarantined, not fatal. When DuckDB refuses a JSON lines file (a line
    that is not UTF-8, a line longer than :data:`MAX_LINE_BYTES`, a truncated gzip stream), the
    file is read again line by line: each such line is quarantined with its number
    (``invalid_utf8``, ``line_too_long``; ``truncated_file`` or ``unreadable_stream`` for what a
    broken stream lost) and
    every other line goes on as usual. A CSV or Parquet file DuckDB cannot read is quarantined
    whole (``unreadable_file``, with the error).
    """
    con = duckdb.connect()
    try:
        try:
            staged = STAGERS[source.format](con, path, source)
            return type_staged(con, staged, source.mapping, ingested_at=ingested_at, run_id=run_id)
        except _UNREADABLE as exc:
            if source.format != "jsonl":
                return Typed(EVENTS.empty_table(), _file_reject(path, exc, run_id, ingested_at))
        with tempfile.TemporaryDirectory() as tmp:
            salvaged = _salvage_jsonl(path, Path(tmp) / "readable.jsonl")
            staged = stage_jsonl(con, salvaged.path, source, name=path.name)
            typed = type_staged(con, staged, source.mapping, ingested_at=ingested_at, run_id=run_id)
        # Line numbers of the readable lines' rejects are those of the original file.
        original = pa.array(salvaged.line_numbers, pa.int64())
        rejects = typed.rejects.set_column(
            typed.rejects.schema.get_field_index("line_no"), "line_no",
            pc.take(original, pc.subtract(typed.rejects.column("line_no"), 1)),
        )  # fmt: skip
        lost = quarantine_rows(
            stage="extract", reasons=pa.array([r for _, r, _ in salvaged.rejects], pa.string()),
            source=path.name, line_no=pa.array([n for n, _, _ in salvaged.rejects], pa.int64()),
            event_id=pa.nulls(len(salvaged.rejects), pa.string()),
            raw=pa.array([t for _, _, t in salvaged.rejects], pa.string()),
            run_id=run_id, at=ingested_at,
        )  # fmt: skip
        return Typed(typed.events, pa.concat_tables([rejects, lost.cast(rejects.schema)]))
    finally:
        con.close()


@dataclass(frozen=True)
class _Salvaged:
    path: Path  # the readable lines, in order
    line_numbers: list[int]  # the original number of each readable line
    rejects: list[tuple[int, str, str]]  # (line number, reason, raw text or what is known)


def _salvage_jsonl(path: Path, out: Path) -> _Salvaged:
    opener = gzip.open if path.suffix == ".gz" else open
    numbers: list[int] = []
    rejects: list[tuple[int, str, str]] = []
    n = 0
    with opener(path, "rb") as f, open(out, "wb") as dst:
        try:
            while True:
                line = f.readline(MAX_LINE_BYTES + 1)
                if not line:
                    break
                n += 1
                if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
                    head = line[:1024].decode("utf-8", "replace")
                    while line and not line.endswith(b"\n"):  # skip the rest of it
                        line = f.readline(MAX_LINE_BYTES)
                    rejects.append((n, "line_too_long", head))
                    continue
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError as exc:
                    text = line.decode("utf-8", "replace").rstrip("\r\n")
                    rejects.append(
                        (n, "invalid_utf8", f"{text} ({exc.reason} at byte {exc.start})")
                    )
                    continue
                dst.write(line if line.endswith(b"\n") else line + b"\n")
                numbers.append(n)
        except (EOFError, OSError, zlib.error) as exc:
            # EOFError: the stream stops early; anything else: it is not what its name says.
            reason = "truncated_file" if isinstance(exc, EOFError) else "unreadable_stream"
            rejects.append((n + 1, reason, f"{path.name}: {exc} (after line {n})"))
    return _Salvaged(out, numbers, rejects)


def _file_reject(path: Path, exc: BaseException, run_id: str, at: datetime) -> pa.Table:
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return quarantine_rows(
        stage="extract", reasons=pa.array(["unreadable_file"], pa.string()), source=path.name,
        line_no=None, event_id=pa.nulls(1, pa.string()),
        raw=pa.array([f"{path.name}: {message}"], pa.string()), run_id=run_id, at=at,
    )  # fmt: skip
