"""Score stage: top-K lists for every user, each segment served by what won it in training,
topped up from the popular list, gated by the recommendations suite, written to the lake."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl

from features.contracts import RECOMMENDATIONS, SIMILAR_ITEMS, C, conform
from models.base import TrainingData
from models.baselines import PopularityParams, PopularityRecommender, SegmentPopularity
from models.ease import EASEParams, EASERecommender
from models.policy import SEGMENTS, fill_to_k
from pipelines.stores import Stores, lake, warehouse
from pipelines.stores.serving import table_checksum
from pipelines.stores.tracking import Tracking, load_champion, load_version
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
    ease: EASEParams,
    run_id: str,
    as_of: datetime,
    plan_run_id: str | None = None,
    model_version: str | None = None,
    plan_version: str | None = None,
    features_schema: str = warehouse.LATEST,
    generated_at: datetime,
    ttl: timedelta,
    num_threads: int,
) -> ScoreReport:
    """Top-k for every user in ``user_features``, as of ``as_of``.

    Warm users (an event before ``as_of``) and cold users (attributes only) are each served by
    what won their segment in training ``plan_run_id`` (default: the last one; the warehouse's
    ``segment_choices``): the ``@champion`` model (``source`` model or cold_start), EASE refitted
    on the same tables (ease), segment
    popularity (segment_popular) or global popularity over some window (popular). Users the
    model does not describe, and the slots a list cannot fill, get the global popular list.
    Items the user had an event on before ``as_of`` and unavailable items are excluded. The
    model is ``model_version`` when given (the one this run refitted), else ``@champion``.
    ``plan_version`` takes the plan of the training that registered that version instead (the
    champion's, for a score-and-publish run). Feature tables are read from ``features_schema``.

    Raises:
        ValidationError: the lists fail the recommendations suite (nothing is written).
    """
    warehouse.require_features_for(stores.warehouse, as_of, features_schema)
    interactions, users, items = warehouse.read_tables(
        stores.warehouse, "interactions", "user_features", "item_features", schema=features_schema
    )
    seen = interactions.select(C.user_id, C.item_id)
    available = items.filter(pl.col(C.available))[C.item_id]
    data = TrainingData(interactions.filter(pl.col("positive")), users, items, as_of)
    popular = PopularityRecommender.fit(data, popularity).recommend(
        users, k, exclude=seen, allowed_items=available, num_threads=num_threads
    )
    champion = load_version(tracking, model_version) if model_version else load_champion(tracking)
    plan = warehouse.serving_plan(stores.warehouse, plan_run_id, plan_version) or dict.fromkeys(
        SEGMENTS, "model"
    )
    warm = pl.col(C.user_id).is_in(interactions[C.user_id].unique().implode())
    groups = {"warm": users.filter(warm), "cold": users.filter(~warm)}
    parts = []
    served_by_model = False
    for segment, candidate in plan.items():
        group = groups.get(segment)
        if group is None or group.height == 0:
            continue
        if candidate == "model" and champion is not None:
            model = champion.recommender
            described = group.filter(pl.Series(model.describes(group)))
            parts.append(
                model.recommend(
                    described, k, exclude=seen, allowed_items=available, num_threads=num_threads
                )
            )
            served_by_model = True
        elif candidate == "ease":
            item_model = EASERecommender.fit(data, ease)
            described = group.filter(pl.Series(item_model.describes(group)))
            parts.append(
                item_model.recommend(
                    described, k, exclude=seen, allowed_items=available, num_threads=num_threads
                )
            )
        elif candidate.startswith("popular:"):
            days = candidate.split(":", 1)[1]
            other = PopularityParams(window_days=None if days == "all" else int(days))
            parts.append(
                PopularityRecommender.fit(data, other).recommend(
                    group, k, exclude=seen, allowed_items=available, num_threads=num_threads
                )
            )
        elif candidate.startswith("segment:"):
            by_segment = SegmentPopularity.fit(data, popularity, candidate.split(":", 1)[1])
            parts.append(
                by_segment.recommend(
                    group, k, exclude=seen, allowed_items=available, num_threads=num_threads
                )
            )
    recs = fill_to_k(pl.concat(parts), popular, k) if parts else popular
    version = champion.version if champion is not None and served_by_model else "popularity"
    similar = None
    if champion is not None:
        similar = champion.recommender.similar_items(
            k, allowed_items=available, num_threads=num_threads
        )
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
