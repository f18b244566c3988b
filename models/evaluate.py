"""Ranking metrics on a temporal holdout: precision@k, recall@k, nDCG@k (binary relevance), per
user (for paired comparisons) and as means."""

from __future__ import annotations

import numpy as np
import polars as pl

from features.contracts import C

PER_USER_SCHEMA = {
    C.user_id: pl.String,
    "precision": pl.Float64,
    "recall": pl.Float64,
    "ndcg": pl.Float64,
}


def per_user_metrics(recs: pl.DataFrame, holdout: pl.DataFrame, k: int) -> pl.DataFrame:
    """One row per user in ``holdout`` (sorted by user_id): ``precision``, ``recall``, ``ndcg``
    at ``k``. A holdout user without recommendations scores 0.

    Args:
        recs: one row per user_id x rank (``user_id, rank, item_id``).
        holdout: one row per relevant user_id x item_id.
        k: cut-off; ranks above ``k`` are ignored.
    """
    relevant = holdout.select(C.user_id, C.item_id).unique().with_columns(hit=pl.lit(1))
    n_relevant = relevant.group_by(C.user_id).agg(pl.len().alias("n_relevant"))
    if n_relevant.height == 0:
        return pl.DataFrame(schema=PER_USER_SCHEMA)
    top = recs.filter(pl.col(C.rank) <= k).select(C.user_id, C.item_id, C.rank)
    hits = top.join(relevant, on=[C.user_id, C.item_id], how="inner")
    per_user = (
        hits.group_by(C.user_id)
        .agg(
            pl.len().alias("hits"),
            (1.0 / (pl.col(C.rank).cast(pl.Float64) + 1.0).log(2)).sum().alias("dcg"),
        )
        .join(n_relevant, on=C.user_id, how="right")
        .fill_null(0)
        .sort(C.user_id)
    )
    n_rel = per_user["n_relevant"].to_numpy()
    hits_arr = per_user["hits"].to_numpy().astype(float)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.cumsum(discounts)[np.minimum(n_rel, k) - 1]
    return pl.DataFrame(
        {
            C.user_id: per_user[C.user_id],
            "precision": hits_arr / k,
            "recall": hits_arr / n_rel,
            "ndcg": per_user["dcg"].to_numpy().astype(float) / ideal,
        },
        schema=PER_USER_SCHEMA,
    )


def series_mean(values: pl.Series) -> float:
    """Mean of a numeric series; 0 when it is empty."""
    mean = values.mean()
    return float(mean) if isinstance(mean, int | float) else 0.0


def mean_metrics(per_user: pl.DataFrame, k: int) -> dict[str, float]:
    """Means of :func:`per_user_metrics`: ``precision_at_<k>``, ``recall_at_<k>``,
    ``ndcg_at_<k>`` and ``n_users``."""
    if per_user.height == 0:
        return {f"precision_at_{k}": 0.0, f"recall_at_{k}": 0.0, f"ndcg_at_{k}": 0.0, "n_users": 0}
    return {
        f"precision_at_{k}": series_mean(per_user["precision"]),
        f"recall_at_{k}": series_mean(per_user["recall"]),
        f"ndcg_at_{k}": series_mean(per_user["ndcg"]),
        "n_users": float(per_user.height),
    }


def ranking_metrics(recs: pl.DataFrame, holdout: pl.DataFrame, k: int) -> dict[str, float]:
    """Mean metrics over the users in ``holdout`` (see :func:`per_user_metrics`)."""
    return mean_metrics(per_user_metrics(recs, holdout, k), k)
