"""Features stage: the ``features/sql`` tables and the ``popular_items`` table for one ``as_of``,
rebuilt in the warehouse from the clean lake and the latest catalogs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa

from features.build import FEATURE_TABLES, register_inputs, run_sql
from features.contracts import C
from models.base import TrainingData
from models.baselines import PopularityParams, popular_items
from pipelines.stores import Stores, lake, warehouse


def lake_inputs(stores: Stores) -> dict[str, Any]:
    """The logical inputs of the SQL files (``clean_events``, ``users``, ``items``) in the lake."""
    return {
        "events_glob": lake.events_glob(stores.lake, "clean"),
        "users": lake.catalog_path(stores.lake, "users"),
        "items": lake.catalog_path(stores.lake, "items"),
    }


def default_as_of(stores: Stores, holdout_days: int) -> datetime:
    """The ``as_of`` of a run that names none: midnight UTC ``holdout_days`` before the day after
    the newest clean event, so the last ``holdout_days`` full days are the evaluation window."""
    latest = lake.latest_event_ts(stores.lake)
    midnight = latest.replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight + timedelta(days=1) - timedelta(days=holdout_days)


def seen_pairs(stores: Stores, before: datetime) -> pl.DataFrame:
    """One row per user_id x item_id with an event before ``before`` (the "already seen" set)."""
    con = duckdb.connect()  # in memory: only reads the lake
    try:
        register_inputs(con, **lake_inputs(stores))
        frame = pl.from_arrow(run_sql(con, "interactions", as_of=before))
    finally:
        con.close()
    assert isinstance(frame, pl.DataFrame)
    return frame.select(C.user_id, C.item_id)


@dataclass(frozen=True)
class FeaturesReport:
    """Rows per feature table written to the warehouse."""

    as_of: datetime
    holdout_end: datetime
    rows: dict[str, int]


def build_features(
    stores: Stores,
    *,
    as_of: datetime,
    holdout_days: int,
    top_k: int,
    popularity: PopularityParams,
) -> FeaturesReport:
    """Run every ``features/sql`` file against the clean lake, derive ``popular_items``
    (:func:`models.baselines.popular_items`), and replace each warehouse table."""
    holdout_end = as_of + timedelta(days=holdout_days)
    params = {"as_of": as_of, "holdout_end": holdout_end}
    tables: dict[str, pa.Table] = {}
    con = duckdb.connect()  # compute in memory; the warehouse is held only to write
    try:
        register_inputs(con, **lake_inputs(stores))
        for name in FEATURE_TABLES:
            tables[name] = run_sql(con, name, **params)
    finally:
        con.close()
    frames = {name: _frame(table) for name, table in tables.items()}
    data = TrainingData(
        frames["interactions"], frames["user_features"], frames["item_features"], as_of
    )
    available = data.items.filter(pl.col(C.available))[C.item_id]
    tables["popular_items"] = popular_items(data, popularity, top_k, available).to_arrow()
    rows = {name: table.num_rows for name, table in tables.items()}
    with warehouse.connect(stores.warehouse) as wh:
        for name, table in tables.items():
            warehouse.replace(wh, name, table)
        warehouse.append(
            wh,
            "feature_runs",
            pa.table(
                {
                    "as_of": pa.array([as_of], pa.timestamp("us", tz="UTC")),
                    "holdout_end": pa.array([holdout_end], pa.timestamp("us", tz="UTC")),
                    **{f"rows_{k}": [v] for k, v in rows.items()},
                }
            ),
        )
    return FeaturesReport(as_of, holdout_end, rows)


def _frame(table: pa.Table) -> pl.DataFrame:
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame
