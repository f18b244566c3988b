"""Train stage: fit LightFM on the feature tables, evaluate it with the popularity baseline and
the current champion on the same holdout users, log everything to MLflow, and apply the
promotion policy (:func:`models.policy.promotion_decision`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import polars as pl

from features.contracts import C
from models.base import Recommender, TrainingData
from models.baselines import PopularityParams, PopularityRecommender
from models.evaluate import ranking_metrics
from models.lightfm_model import LightFMRecommender
from models.params import LightFMParams
from models.policy import promotion_decision
from pipelines.stores import Stores, warehouse
from pipelines.stores.tracking import Tracking, load_champion, log_training_run


@dataclass(frozen=True)
class TrainReport:
    """A training run: its metrics, the baseline's and the champion's on the same holdout."""

    mlflow_run_id: str
    model_version: str
    promoted: bool
    decision: str
    metrics: dict[str, float]


def train(
    stores: Stores,
    tracking: Tracking,
    *,
    params: LightFMParams,
    popularity: PopularityParams,
    k: int,
    run_id: str,
    as_of: datetime,
) -> TrainReport:
    """Train on events before ``as_of``, evaluate on the holdout after it, log to MLflow.

    Raises:
        ValueError: there are no interactions before ``as_of``.
    """
    interactions, holdout, users, items = warehouse.read_tables(
        stores.warehouse, "interactions", "holdout", "user_features", "item_features"
    )
    if interactions.height == 0:
        raise ValueError(f"no interactions before as_of={as_of.isoformat()}; nothing to train on")
    data = TrainingData(interactions, users, items, as_of)
    model = LightFMRecommender.fit(data, params)
    holdout_users = users.filter(pl.col(C.user_id).is_in(holdout[C.user_id].unique().implode()))
    seen = interactions.select(C.user_id, C.item_id)
    candidates: dict[str, Recommender] = {
        "model": model,
        "baseline": PopularityRecommender.fit(data, popularity),
    }
    champion = load_champion(tracking)
    if champion is not None:
        candidates["champion"] = champion.recommender
    metrics: dict[str, float] = {}
    for name, recommender in candidates.items():
        recs = recommender.recommend(holdout_users, k, exclude=seen, num_threads=params.num_threads)
        for metric, value in ranking_metrics(recs, holdout, k).items():
            metrics[f"{name}_{metric}"] = value
    decision = promotion_decision(metrics, f"precision_at_{k}", has_champion=champion is not None)
    logged = log_training_run(
        tracking,
        model,
        run_name=f"nightly-{as_of:%Y-%m-%d}",
        params={
            **{f"lightfm_{k_}": v for k_, v in params.model_dump().items()},
            "popularity_window_days": popularity.window_days,
            "as_of": as_of.isoformat(),
            "k": k,
            "n_users": users.height,
            "n_items": items.height,
            "n_interactions": interactions.height,
            "n_holdout_pairs": holdout.height,
        },
        metrics=metrics,
        tags={
            "flow_run_id": run_id,
            "decision": decision.reason,
            "champion_version": champion.version if champion else "none",
        },
        promote=decision.promote,
    )
    return TrainReport(logged.run_id, logged.version, decision.promote, decision.reason, metrics)
