"""The data contracts: column names and Arrow schemas of every table the engine reads or writes.

Every write goes through :func:`conform`, which checks and casts a table to its contract and names
the offending column when it cannot.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

import pyarrow as pa


class Columns:
    """Column names shared by every module (RecTools style)."""

    event_id: Final = "event_id"
    user_id: Final = "user_id"
    item_id: Final = "item_id"
    event_type: Final = "event_type"
    event_ts: Final = "event_ts"
    value: Final = "value"
    session_id: Final = "session_id"
    source: Final = "source"
    ingested_at: Final = "ingested_at"
    dt: Final = "dt"
    rank: Final = "rank"
    score: Final = "score"
    weight: Final = "weight"
    available: Final = "available"
    reason: Final = "reason"
    raw: Final = "raw"
    run_id: Final = "run_id"


C = Columns

EVENT_TYPES: Final = ("view", "click", "add_to_cart", "purchase", "rating")

TS = pa.timestamp("us", tz="UTC")

EVENTS = pa.schema(
    [
        pa.field(C.event_id, pa.string(), nullable=False),
        pa.field(C.user_id, pa.string()),
        pa.field(C.item_id, pa.string()),
        pa.field(C.event_type, pa.string()),
        pa.field(C.event_ts, TS, nullable=False),
        pa.field(C.value, pa.float64()),
        pa.field(C.session_id, pa.string()),
        pa.field(C.source, pa.string(), nullable=False),
        pa.field(C.ingested_at, TS, nullable=False),
    ]
)
"""Events in the lake (raw and clean zones). ``dt`` is the Hive partition, not a column. Ids are
trimmed; a blank id is stored as null (and quarantined by validation)."""

QUARANTINE = pa.schema(
    [
        pa.field("stage", pa.string(), nullable=False),
        pa.field(C.reason, pa.string(), nullable=False),
        pa.field(C.source, pa.string(), nullable=False),
        pa.field("line_no", pa.int64()),
        pa.field(C.event_id, pa.string()),
        pa.field(C.raw, pa.string(), nullable=False),
        pa.field(C.run_id, pa.string(), nullable=False),
        pa.field("quarantined_at", TS, nullable=False),
    ]
)
"""Every rejected record, with the stage that rejected it, the reason and the raw payload."""

RECOMMENDATIONS = pa.schema(
    [
        pa.field(C.user_id, pa.string(), nullable=False),
        pa.field(C.rank, pa.int32(), nullable=False),
        pa.field(C.item_id, pa.string(), nullable=False),
        pa.field(C.score, pa.float64(), nullable=False),
        pa.field(C.source, pa.string(), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
        pa.field(C.run_id, pa.string(), nullable=False),
        pa.field("generated_at", TS, nullable=False),
        pa.field("expires_at", TS, nullable=False),
    ]
)
"""One row per user_id x rank (1..K); ``source`` is model, cold_start, ease, segment_popular or
popular."""

POPULAR_ITEMS = pa.schema(
    [
        pa.field("segment", pa.string(), nullable=False),
        pa.field(C.rank, pa.int32(), nullable=False),
        pa.field(C.item_id, pa.string(), nullable=False),
        pa.field(C.score, pa.float64(), nullable=False),
    ]
)

SIMILAR_ITEMS = pa.schema(
    [
        pa.field(C.item_id, pa.string(), nullable=False),
        pa.field(C.rank, pa.int32(), nullable=False),
        pa.field("similar_item_id", pa.string(), nullable=False),
        pa.field(C.score, pa.float64(), nullable=False),
    ]
)

RECOMMENDATION_SOURCES: Final = ("model", "cold_start", "ease", "segment_popular", "popular")


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


class ContractError(ValueError):
    """A table does not match its contract; the message names the table and the column."""


def conform(table: pa.Table, schema: pa.Schema, name: str) -> pa.Table:
    """Select, order and cast ``table``'s columns to ``schema``.

    Raises:
        ContractError: naming ``name`` and the column that is missing, cannot be cast, or holds
            nulls where the contract forbids them.
    """
    missing = [f.name for f in schema if f.name not in table.column_names]
    if missing:
        raise ContractError(
            f"{name}: missing column(s) {missing}; "
            f"expected {schema.names}, got {table.column_names}"
        )
    arrays = []
    for field in schema:
        column = table.column(field.name)
        try:
            column = column.cast(field.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise ContractError(
                f"{name}: column {field.name!r} is {column.type}, expected {field.type}: {exc}"
            ) from exc
        if not field.nullable and column.null_count:
            raise ContractError(
                f"{name}: column {field.name!r} has {column.null_count} null(s); it must not"
            )
        arrays.append(column)
    return pa.Table.from_arrays(arrays, schema=schema)
