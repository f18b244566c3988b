"""Validate stage: the events suite gates each batch of new raw partition files; clean rows go to
the clean zone, the rest to the warehouse ``quarantine`` table with a reason."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import polars as pl
import pyarrow as pa

from features.contracts import EVENTS, C, quarantine_rows
from pipelines.stores import Stores, lake, warehouse
from pipelines.suites.events import ValidationParams, ValidationThresholds, validate_events
from pipelines.suites.runner import ValidationError, data_docs_index


@dataclass(frozen=True)
class ValidateReport:
    """Counts of one validation; ``rows_in == rows_clean + rows_quarantined``."""

    units: list[str]
    rows_in: int
    rows_clean: int
    rows_quarantined: int
    quarantined_by_reason: dict[str, int]
    expectations_passed: int
    expectations_failed: int
    failures: list[str] = field(default_factory=list)
    data_docs: str | None = None


def validate(
    stores: Stores,
    *,
    run_id: str,
    now: datetime,
    units: list[str] | None = None,
    thresholds: ValidationThresholds,
) -> ValidateReport:
    """Gate the given raw partition files (default: all not validated yet) with GX, then split
    their rows. ``now`` stamps the verdict; events later than now plus the allowed clock skew
    are quarantined as ``future_timestamp``.

    Clean rows go to the same partition files in the clean zone; quarantined rows go to the
    warehouse ``quarantine`` table with a reason; the verdict goes to ``validation_runs``.

    Raises:
        ValidationError: the batch failed; nothing reaches the clean zone or the quarantine (its
            raw files stay pending for the next run), and the message names every failed
            expectation.
    """
    units = lake.pending_units(stores.lake) if units is None else units
    if not units:
        return ValidateReport([], 0, 0, 0, {}, 0, 0)
    batch = lake.read_units(stores.lake, "raw", units, unit_column="_unit")
    items = _catalog_ids(stores, "items", C.item_id)
    users = _catalog_ids(stores, "users", C.user_id)
    first = batch[C.event_ts].min()
    history = lake.clean_history(
        stores.lake, exclude=units, before=first if isinstance(first, datetime) else None
    )
    params = ValidationParams(
        window_end=now + timedelta(minutes=thresholds.clock_skew_minutes),
        known_items=items,
        known_users=users,
        seen_users=history.users,
        seen_items=history.items,
        trailing_daily_volume=history.trailing_daily_volume,
        thresholds=thresholds,
    )
    result = validate_events(
        batch, params, passthrough=["_unit"], history_dates=history.dates, gx_root=stores.gx_root
    )
    quarantined = result.quarantined.drop("_unit")
    report = ValidateReport(
        units=units,
        rows_in=batch.height,
        rows_clean=result.clean.height,
        rows_quarantined=quarantined.height,
        quarantined_by_reason=result.counts_by_reason(),
        expectations_passed=sum(o.success for o in result.outcomes),
        expectations_failed=sum(not o.success for o in result.outcomes),
        failures=result.failures,
        data_docs=str(data_docs_index(stores.gx_root)) if stores.gx_root else None,
    )
    with warehouse.connect(stores.warehouse) as con:
        # A failed batch stays pending in the raw zone and is validated again after the fix, so
        # only a passing batch quarantines its rows (once).
        if result.success and quarantined.height:
            warehouse.append(
                con,
                "quarantine",
                quarantine_rows(
                    stage="validate",
                    reasons=quarantined[C.reason].to_arrow(),
                    source=quarantined[C.source].to_arrow(),
                    line_no=None,
                    event_id=quarantined[C.event_id].to_arrow(),
                    raw=quarantined.drop(C.reason)
                    .select(pl.struct(pl.all()).struct.json_encode())
                    .to_series()
                    .to_arrow(),
                    run_id=run_id,
                    at=now,
                ),
            )
        warehouse.append(
            con,
            "validation_runs",
            pa.table(
                {
                    "run_id": [run_id],
                    "validated_at": pa.array([now], pa.timestamp("us", tz="UTC")),
                    "units": [",".join(units)],
                    "success": [result.success],
                    "rows_in": [report.rows_in],
                    "rows_clean": [report.rows_clean],
                    "rows_quarantined": [report.rows_quarantined],
                    "quarantine_share": [result.quarantine_share],
                    "expectations_failed": [report.expectations_failed],
                    "failures": ["\n".join(result.failures)],
                }
            ),
        )
    if not result.success:
        raise ValidationError(
            f"{len(units)} raw partition file(s) ({units[0]}, ...)", result.failures
        )
    by_file = _slices_by(result.clean, "_unit")
    for unit in units:
        rows = by_file.get(str(lake.unit_path(stores.lake, "raw", unit)))
        table = rows.drop("_unit").to_arrow() if rows is not None else EVENTS.empty_table()
        lake.write_unit(stores.lake, "clean", unit, table)
    return report


def _slices_by(frame: pl.DataFrame, column: str) -> dict[str, pl.DataFrame]:
    """Rows per value of ``column`` as zero-copy slices: the rows of one file are contiguous
    (read in file order, filtered in order), which ``partition_by`` would copy for nothing."""
    out: dict[str, pl.DataFrame] = {}
    offset = 0
    for length, value in frame[column].rle().struct.unnest().iter_rows():
        part = frame.slice(offset, length)
        out[value] = pl.concat([out[value], part]) if value in out else part
        offset += length
    return out


def _catalog_ids(stores: Stores, name: str, column: str) -> frozenset[str]:
    table = lake.read_catalog(stores.lake, name, columns=[column])
    if table is None:
        raise FileNotFoundError(
            f"{lake.catalog_path(stores.lake, name)}: no catalog snapshot; run `recs run extract`"
        )
    return frozenset(table.column(column).to_pylist())
