"""Features stage: the ``features/sql`` tables and the ``popular_items`` table for one ``as_of``,
rebuilt in the warehouse from the clean lake and the latest catalogs."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa
from tqdm import tqdm

from features.build import FEATURE_TABLES, exclude_pairs, register_inputs, run_sql
from features.contracts import C
from features.signal import SignalParams
from models.base import TrainingData
from models.baselines import PopularityParams, popular_items
from pipelines.stores import Stores, lake, warehouse


def lake_inputs(stores: Stores, as_of: datetime) -> dict[str, Any]:
    """The logical inputs of the SQL files (``clean_events``, ``users``, ``items``) in the lake:
    the clean zone and the catalog snapshots in force at ``as_of``."""
    return {
        "events_glob": lake.events_glob(stores.lake, "clean"),
        "users": lake.catalog_at(stores.lake, "users", as_of),
        "items": lake.catalog_at(stores.lake, "items", as_of),
    }


def default_as_of(now: datetime) -> datetime:
    """The ``as_of`` of a run that names none: the run's own start. A run never reads an event at
    or after its ``as_of``, so a run for a past night is a backfill of that night."""
    return now


EVALUATION_TABLES = {
    "interactions": "eval_interactions",
    "user_features": "eval_user_features",
    "item_features": "eval_item_features",
}
"""Feature tables as of the evaluation window's start, under their warehouse names."""


@dataclass(frozen=True)
class FeaturesReport:
    """Rows per feature table written to the warehouse, and the run's timeline."""

    as_of: datetime
    window_start: datetime
    rows: dict[str, int]
    manifest: str = ""  # a fingerprint of every table's content (see :func:`content_manifest`)
    last_positive_users: int = 0  # warm users judged on their own latest positives (see below)


def content_manifest(tables: dict[str, pa.Table]) -> str:
    """A fingerprint of the tables' content, independent of row order (joins reorder rows):
    per table, its row count and the wrapping sum of its row hashes. Equal inputs give equal
    manifests within one Polars version (row hashes are not stable across versions)."""
    digest = hashlib.sha256()
    for name in sorted(tables):
        frame = _frame(tables[name])
        total = frame.hash_rows(seed=0).cast(pl.Decimal(38, 0)).sum() if frame.height else 0
        digest.update(f"{name}:{frame.height}:{frame.columns}:{total}\n".encode())
    return digest.hexdigest()


def build_features(
    stores: Stores,
    *,
    as_of: datetime,
    holdout_days: int,
    top_k: int,
    signal: SignalParams,
    popularity: PopularityParams,
    schema: str = warehouse.LATEST,
    min_warm_users: int = 0,
    truth: SignalParams | None = None,
) -> FeaturesReport:
    """The feature tables of one run, from events before ``as_of`` only, into the warehouse.

    As of ``as_of`` (the refit and the lists): ``interactions``, ``user_features``,
    ``item_features`` and ``popular_items`` (:func:`models.baselines.popular_items`). As of the
    evaluation window's start (``as_of - holdout_days``, what candidates train on):
    ``eval_interactions``, ``eval_user_features``, ``eval_item_features``; and ``holdout``, the
    window's truth. Catalogs are the snapshots in force at ``as_of``. When the window holds
    fewer than ``min_warm_users`` warm users, ``holdout`` also gets the latest positives of warm
    users the window does not reach (leave-last-out, before the window's start: see
    :func:`with_last_positives`), and the evaluation tables are built without those pairs.

    ``signal`` makes the training tables; ``truth`` (default: ``signal``) says what the window
    counts as a like (its ``min_rating``). The nightly passes the configured signal as ``truth``
    and a study's tuned one as ``signal``, so a tuned threshold changes what candidates learn
    from, never what they are judged on (as in the study itself, :mod:`pipelines.tune`).

    The tables go to warehouse ``schema``: the latest (``main``), or a backfill's own
    (:func:`pipelines.stores.warehouse.features_schema`), the oldest of which are dropped.
    """
    start = as_of - timedelta(days=holdout_days)
    tables: dict[str, pa.Table] = {}
    con = duckdb.connect()  # compute in memory; the warehouse is held only to write
    try:
        register_inputs(con, **lake_inputs(stores, as_of))
        sql = signal.sql_params()
        judged = (truth or signal).sql_params()
        for name in tqdm(FEATURE_TABLES, desc="features", unit="table", disable=None, leave=False):
            if name == "holdout":
                tables[name] = run_sql(con, name, start=start, end=as_of, **judged)
            else:
                tables[name] = run_sql(con, name, as_of=as_of, **sql)
        tables["holdout"], last_users = with_last_positives(
            con, tables["holdout"], start, as_of, judged, min_warm_users
        )
        for name, eval_name in EVALUATION_TABLES.items():
            tables[eval_name] = run_sql(con, name, as_of=start, **sql)
    finally:
        con.close()
    frames = {
        name: _frame(tables[name]) for name in ("interactions", "user_features", "item_features")
    }
    data = TrainingData(
        frames["interactions"].filter(pl.col("positive")),
        frames["user_features"],
        frames["item_features"],
        as_of,
    )
    available = data.items.filter(pl.col(C.available))[C.item_id]
    tables["popular_items"] = popular_items(data, popularity, top_k, available).to_arrow()
    rows = {name: table.num_rows for name, table in tables.items()}
    manifest = content_manifest(tables)
    # One transaction: a kill leaves the previous feature tables whole, never a mix.
    with warehouse.connect(stores.warehouse) as wh, warehouse.transaction(wh):
        for name, table in tables.items():
            warehouse.replace(wh, name, table, schema=schema)
        if warehouse.table_exists(wh, "feature_runs"):  # a rerun of this build: logged once
            wh.execute(
                "delete from feature_runs where as_of = ? and features_schema = ? and manifest = ?",
                [as_of, schema, manifest],
            )
        warehouse.append(
            wh,
            "feature_runs",
            pa.table(
                {
                    "as_of": pa.array([as_of], pa.timestamp("us", tz="UTC")),
                    "features_schema": [schema],
                    "manifest": [manifest],
                    "window_start": pa.array([start], pa.timestamp("us", tz="UTC")),
                    **{f"rows_{k}": [v] for k, v in rows.items()},
                }
            ),
        )
        if schema != warehouse.LATEST:
            warehouse.drop_old_backfill_schemas(wh, warehouse.KEEP_BACKFILL_SCHEMAS)
    return FeaturesReport(as_of, start, rows, manifest, last_users)


LAST_SHARE = 0.2
"""Leave-last-out truth: the share of each user's positive pairs held out (at least one)."""

LAST_POSITIVE_USERS = 5_000
"""Leave-last-out truth: at most this many users (the first by ``md5(user_id)``)."""


def with_last_positives(
    con: duckdb.DuckDBPyConnection,
    holdout: pa.Table,
    start: datetime,
    end: datetime,
    sql: dict[str, Any],
    min_warm_users: int,
) -> tuple[pa.Table, int]:
    """The window's truth ``holdout`` (of ``[start, end)``), and when it holds fewer than
    ``min_warm_users`` warm users, with the latest positives of warm users it does not reach
    (``features/sql/last_positives.sql``; ``clean_events`` on ``con`` then loses those pairs:
    :func:`features.build.exclude_pairs`). Returns the truth, sorted by user and item, and how
    many users were added.

    Point in time: only events before ``start`` are held out. A short window over bursty data
    (each user active a day or two) can hold a handful of warm users, too few for any candidate
    to win that segment outside the bootstrap noise, so popularity would serve every user with a
    history by default."""
    warm = _frame(holdout).filter(pl.col("user_segment") == "warm")[C.user_id].n_unique()
    if warm >= min_warm_users:
        return holdout, 0
    held = run_sql(
        con, "last_positives", start=start, end=end, share=LAST_SHARE,
        max_users=LAST_POSITIVE_USERS, **sql,
    )  # fmt: skip
    if held.num_rows == 0:
        return holdout, 0
    exclude_pairs(con, held)
    both = _frame(pa.concat_tables([holdout, held], promote_options="permissive"))
    return both.sort(C.user_id, C.item_id).to_arrow(), len(held.column(C.user_id).unique())


def _frame(table: pa.Table) -> pl.DataFrame:
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame
