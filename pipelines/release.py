"""Release stage: quarantined rows re-checked after a fix (say, missing items added to the
catalog), and the ones that now pass written once to the clean zone."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl

from features.contracts import EVENTS, C
from pipelines.stores import Stores, lake, warehouse
from pipelines.suites.events import ValidationParams, ValidationThresholds, validate_events


@dataclass(frozen=True)
class ReleaseReport:
    """Quarantined rows re-checked after a fix: how many passed and went to the clean zone."""

    rows_checked: int
    rows_released: int
    still_quarantined_by_reason: dict[str, int]
    units: list[str]


def release_quarantine(
    stores: Stores,
    *,
    run_id: str,
    now: datetime,
    thresholds: ValidationThresholds,
    reasons: Sequence[str] | None = None,
) -> ReleaseReport:
    """Re-validate rows that validation quarantined (optionally only some reasons) against the
    current rules and catalogs, e.g. after unknown items were added to the catalog, and release
    the ones that now pass into the clean zone (``dt=<day>/released-<run_id>.parquet``).

    A row is released at most once (``quarantine_releases`` records it); a row whose event id is
    already clean is never released (it would be a duplicate).
    """
    candidates = warehouse.releasable_quarantine(stores.warehouse)
    if reasons:
        candidates = candidates.filter(pl.col(C.reason).is_in(list(reasons)))
    if candidates.height == 0:
        return ReleaseReport(0, 0, {}, [])
    schema = {name: pl.String for name in EVENTS.names}
    rows = (
        candidates.select(
            pl.col(C.raw).str.json_decode(pl.Struct(schema)).struct.unnest(), "raw_md5"
        )
        .with_columns(
            pl.col(C.event_ts, C.ingested_at).str.to_datetime(time_zone="UTC", time_unit="us"),
            pl.col(C.value).cast(pl.Float64),
        )
    )  # fmt: skip
    already_clean = lake.clean_event_ids(stores.lake)
    items = lake.read_catalog(stores.lake, "items", columns=[C.item_id])
    if items is None:
        raise FileNotFoundError(f"{lake.catalog_path(stores.lake, 'items')}: no items catalog")
    params = ValidationParams(
        window_end=now + timedelta(minutes=thresholds.clock_skew_minutes),
        known_items=frozenset(items.column(C.item_id).to_pylist()),
        # A selection, not a gate: every row is judged on its own.
        thresholds=thresholds.model_copy(update={"max_quarantine_share": 1.0}),
    )
    result = validate_events(rows, params, passthrough=["raw_md5"])
    passing = result.clean.filter(~pl.col(C.event_id).is_in(already_clean.implode()))
    still = pl.concat(
        [
            result.quarantined.select(C.reason),
            result.clean.filter(pl.col(C.event_id).is_in(already_clean.implode()))
            .with_columns(pl.lit("duplicate_event_id").alias(C.reason))
            .select(C.reason),
        ]
    )
    written = lake.write_part(
        stores.lake, "clean", f"{lake.RELEASED}{run_id}", passing.drop("raw_md5").to_arrow()
    ) if passing.height else []  # fmt: skip
    if passing.height:
        with warehouse.connect(stores.warehouse) as con:
            warehouse.append(
                con,
                "quarantine_releases",
                passing.select(
                    "raw_md5",
                    C.event_id,
                    pl.lit(run_id).alias(C.run_id),
                    pl.lit(now).cast(pl.Datetime("us", "UTC")).alias("released_at"),
                ).to_arrow(),
            )
    return ReleaseReport(
        rows_checked=candidates.height,
        rows_released=passing.height,
        still_quarantined_by_reason=dict(sorted(still.group_by(C.reason).len().iter_rows())),
        units=lake.relative_units(stores.lake, "clean", written),
    )
