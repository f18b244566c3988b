"""Publish stage: swap a run's validated lists, with the popular lists and similar items, into
the serving store in one step, and record the publication in the warehouse."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import pyarrow as pa

from features.contracts import C, ContractError
from pipelines.score import VALIDATED_CHECKSUM
from pipelines.stores import Stores, lake, warehouse
from pipelines.stores.serving import ServingStore, publish_recommendations, table_checksum
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


def publish(
    stores: Stores, *, recommendations: Path, clock: Callable[[], datetime]
) -> PublishReport:
    """Publish the lists of one scored file (default in the flow: the run's own).

    Raises:
        ContractError: the file is empty, or its content is not what the recommendations suite
            passed when it was scored (never validated, or changed since).
    """
    table, similar = lake.read_scored(recommendations)
    if table.num_rows == 0:
        raise ContractError(f"{recommendations}: no recommendations to publish")
    validated = (table.schema.metadata or {}).get(VALIDATED_CHECKSUM)
    checksum = table_checksum(table, [C.user_id, C.rank])
    if validated is None or validated.decode() != checksum:
        raise ContractError(
            f"{recommendations}: not the lists the recommendations suite passed "
            f"({'never validated' if validated is None else 'changed since scoring'}); "
            "run `recs run score` again"
        )
    (popular,) = warehouse.read_tables(stores.warehouse, "popular_items")
    run_id = str(table.column(C.run_id)[0])
    version = str(table.column("model_version")[0])
    pub = publish_recommendations(
        ServingStore(stores.serving_url),
        table,
        popular.to_arrow(),
        similar_items=similar,
        run_id=run_id,
        model_version=version,
        clock=clock,
    )
    report = PublishReport(
        redact(stores.serving_url), run_id, version, pub.n_users, pub.n_rows, pub.checksum
    )
    with warehouse.connect(stores.warehouse) as con:
        row = {k: [v] for k, v in asdict(report).items()}
        row["published_at"] = [clock()]
        warehouse.append(con, "publications", pa.table(row))
        warehouse.publish_views(con, recommendations)
    return report
