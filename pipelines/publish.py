"""Publish stage: make a run's committed lists, with the popular lists and similar items, the
version the serving store serves (one swap), and record it in the warehouse."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from features.contracts import ContractError
from pipelines.stores import Stores, cluster, scored, warehouse
from pipelines.stores.serving import (
    KEEP_VERSIONS,
    ServingStore,
    publish_recommendations,
    rollback,
)
from pipelines.stores.serving_shards import PART_ROWS, load_sharded, parts_of
from pipelines.stores.urls import redact


@dataclass(frozen=True)
class PublishReport:
    """The publication recorded in the serving store."""

    serving_url: str  # redacted: never the password
    run_id: str
    model_version: str
    n_users: int
    n_rows: int
    checksum: str
    version: str = ""  # the serving store's version of these tables (rollback target)


def publish(
    stores: Stores,
    *,
    recommendations: Path,
    clock: Callable[[], datetime],
    keep_versions: int = KEEP_VERSIONS,
    dask_address: str | None = None,
    part_rows: int = PART_ROWS,
) -> PublishReport:
    """Publish the lists of one committed score run (``recommendations``: its directory; in the
    flow, the run's own).

    With ``dask_address`` (a Dask scheduler) and a PostgreSQL store, the lists are loaded over
    parallel connections, one shard per part of about ``part_rows`` rows
    (:mod:`pipelines.stores.serving_shards`); the version served is the same.

    Raises:
        ContractError: the run never committed (no manifest: killed or failed mid-score), its
            lists are empty, or they are not what the recommendations suite passed.
    """
    run = scored.read_scored(recommendations)
    table = run.recommendations
    if table.num_rows == 0:
        raise ContractError(f"{recommendations}: no recommendations to publish")
    (popular,) = warehouse.read_tables(stores.warehouse, "popular_items")
    run_id = str(run.manifest["run_id"])
    version = str(run.manifest["model_version"])
    store = ServingStore(stores.serving_url)
    sharded = dask_address if store.dialect == "postgresql" else None  # SQLite: one writer
    with cluster.connect(sharded) as client:
        load = None
        path = recommendations / "recommendations.parquet"
        if client is not None and len(parts_of(path, part_rows)) > 1:  # one part: load it here

            def load(cur: Any, target: str) -> int:
                return load_sharded(client, store, cur, path, target, part_rows)

        pub = publish_recommendations(
            store,
            table,
            popular.to_arrow(),
            similar_items=run.similar_items,
            run_id=run_id,
            model_version=version,
            clock=clock,
            checksum=run.checksum,
            keep=keep_versions,
            load_recommendations=load,
        )
    report = PublishReport(
        redact(stores.serving_url), run_id, version, pub.n_users, pub.n_rows, pub.checksum,
        pub.version,
    )  # fmt: skip
    published_at = clock()
    with warehouse.connect(stores.warehouse) as con, warehouse.transaction(con):
        row = {k: [v] for k, v in asdict(report).items()}
        row["published_at"] = [published_at]
        if "version" in warehouse.columns(con, "publications"):  # a rerun: recorded once
            con.execute("delete from publications where version = ?", [pub.version])
        warehouse.append(con, "publications", pa.table(row))
        warehouse.append_history(con, run.directory / "recommendations.parquet", published_at)
        warehouse.publish_views(con, run.directory / "recommendations.parquet")
    return report


def rollback_serving(
    stores: Stores, *, run_id: str | None, clock: Callable[[], datetime]
) -> PublishReport:
    """Serve again the lists ``run_id`` published (default: the version before the live one),
    one swap in the serving store; the warehouse's ``recommendations`` view follows when the
    run's scored lists are still in the lake.

    Raises:
        LookupError: the serving store keeps no such version.
    """
    pub = rollback(ServingStore(stores.serving_url), run_id, clock)
    report = PublishReport(
        redact(stores.serving_url), pub.run_id, pub.model_version, pub.n_users, pub.n_rows,
        pub.checksum, pub.version,
    )  # fmt: skip
    with warehouse.connect(stores.warehouse) as con, warehouse.transaction(con):
        row = {k: [v] for k, v in asdict(report).items()}
        row["published_at"] = [clock()]
        warehouse.append(con, "publications", pa.table(row))
        lists = scored.scored_dir(stores.lake, pub.run_id) / "recommendations.parquet"
        if lists.exists():
            warehouse.publish_views(con, lists)
    return report
