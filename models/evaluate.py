"""Ranking metrics on a temporal holdout: precision@k, recall@k, nDCG@k (binary relevance)."""

from __future__ import annotations

import numpy as np
import polars as pl

from features.contracts import C


def ranking_metrics(recs: pl.DataFrame, holdout: pl.DataFrame, k: int) -> dict[str, float]:
    """Mean metrics over the users in ``holdout``.

    Args:
        recs: one row per user_id x rank (``user_id, rank, item_id``).
        holdout: one row per relevant user_id x item_id.
        k: cut-off; ranks above ``k`` are ignored.

    Returns:
        ``precision_at_k``, ``recall_at_k``, ``ndcg_at_k`` (keys spelled with the number, e.g.
        ``precision_at_10``) and ``n_users``. A holdout user without recommendations scores 0.
    """
    relevant = holdout.select(C.user_id, C.item_id).unique().with_columns(hit=pl.lit(1))
    n_relevant = relevant.group_by(C.user_id).agg(pl.len().alias("n_relevant"))
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
    )
    n_rel = per_user["n_relevant"].to_numpy()
    hits_arr = per_user["hits"].to_numpy().astype(float)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.cumsum(discounts)[np.minimum(n_rel, k) - 1]
    n_users = per_user.height
    if n_users == 0:
        return {f"precision_at_{k}": 0.0, f"recall_at_{k}": 0.0, f"ndcg_at_{k}": 0.0, "n_users": 0}
    return {
        f"precision_at_{k}": float(np.mean(hits_arr / k)),
        f"recall_at_{k}": float(np.mean(hits_arr / n_rel)),
        f"ndcg_at_{k}": float(np.mean(per_user["dcg"].to_numpy() / ideal)),
        "n_users": float(n_users),
    }
