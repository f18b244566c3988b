"""Score stage: top-K lists for every user with the ``@champion`` model, topped up from the
popular list, gated by the recommendations suite, written to the lake for publishing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl

from features.contracts import RECOMMENDATIONS, SIMILAR_ITEMS, C, conform
from models.base import TrainingData
from models.baselines import PopularityParams, PopularityRecommender
from models.policy import fill_to_k
from pipelines.features import seen_pairs
from pipelines.stores import Stores, lake, warehouse
from pipelines.stores.serving import table_checksum
from pipelines.stores.tracking import Tracking, load_champion
from pipelines.suites.recommendations import validate_recommendations
from pipelines.suites.runner import ValidationError

VALIDATED_CHECKSUM = b"recs.validated_checksum"
"""Parquet metadata key: the checksum of the lists the recommendations suite passed."""


@dataclass(frozen=True)
class ScoreReport:
    """Where the scored lists were written, and who got what kind."""

    path: Path
    model_version: str
    n_users: int
    rows_by_source: dict[str, int]
    similar_items: Path | None = None


def score(
    stores: Stores,
    tracking: Tracking,
    *,
    k: int,
    popularity: PopularityParams,
    run_id: str,
    as_of: datetime,
    seen_before: datetime,
    generated_at: datetime,
    ttl: timedelta,
    num_threads: int,
) -> ScoreReport:
    """Top-k for every user in ``user_features`` with the ``@champion`` model.

    Items the user interacted with before ``seen_before`` and unavailable items are excluded.
    Users the champion does not describe, and every user when no model is champion yet, get the
    popular list (``source`` = popular, :mod:`models.baselines` as of ``as_of``), as do the
    slots a model cannot fill.

    Raises:
        ValidationError: the lists fail the recommendations suite (nothing is written).
    """
    interactions, users, items = warehouse.read_tables(
        stores.warehouse, "interactions", "user_features", "item_features"
    )
    seen = seen_pairs(stores, seen_before)
    available = items.filter(pl.col(C.available))[C.item_id]
    data = TrainingData(interactions, users, items, as_of)
    popular = PopularityRecommender.fit(data, popularity).recommend(
        users, k, exclude=seen, allowed_items=available, num_threads=num_threads
    )
    champion = load_champion(tracking)
    similar = None
    if champion is None:
        recs, version = popular, "popularity"
    else:
        model = champion.recommender
        described = users.filter(pl.Series(model.describes(users)))
        recs = model.recommend(
            described, k, exclude=seen, allowed_items=available, num_threads=num_threads
        )
        recs, version = fill_to_k(recs, popular, k), champion.version
        similar = model.similar_items(k, allowed_items=available, num_threads=num_threads)
    failures = validate_recommendations(
        recs, k=k, expected_users=users[C.user_id], seen=seen, available_items=available,
        gx_root=stores.gx_root,
    )  # fmt: skip
    if failures:
        raise ValidationError(f"recommendations of run {run_id}", failures)
    table = recs.with_columns(
        model_version=pl.lit(version),
        run_id=pl.lit(run_id),
        generated_at=pl.lit(generated_at).cast(pl.Datetime("us", "UTC")),
        expires_at=pl.lit(generated_at + ttl).cast(pl.Datetime("us", "UTC")),
    ).to_arrow()
    table = conform(table, RECOMMENDATIONS, "scored recommendations")
    checksum = table_checksum(table, [C.user_id, C.rank])
    out = lake.write_scored(
        stores.lake,
        run_id,
        table.replace_schema_metadata({VALIDATED_CHECKSUM: checksum.encode()}),
        conform(similar.to_arrow(), SIMILAR_ITEMS, "similar items")
        if similar is not None
        else None,
    )
    by_source = dict(recs.group_by(C.source).len().sort(C.source).iter_rows())
    return ScoreReport(
        out,
        version,
        users.height,
        {str(s): int(n) for s, n in by_source.items()},
        out.with_name("similar_items.parquet") if similar is not None else None,
    )
