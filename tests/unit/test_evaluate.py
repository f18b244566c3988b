from __future__ import annotations

import math

import polars as pl
import pytest

from models.evaluate import ranking_metrics


def test_metrics_by_hand() -> None:
    recs = pl.DataFrame(
        {
            "user_id": ["a", "a", "a", "b", "b", "b"],
            "rank": [1, 2, 3, 1, 2, 3],
            "item_id": ["x", "y", "z", "x", "y", "z"],
        }
    )
    holdout = pl.DataFrame({"user_id": ["a", "a", "b", "c"], "item_id": ["y", "q", "z", "x"]})
    m = ranking_metrics(recs, holdout, k=2)
    # a: 1 hit (rank 2) of 2 relevant; b: hit at rank 3 is beyond k; c: no recommendations.
    assert m["n_users"] == 3
    assert m["precision_at_2"] == pytest.approx((1 / 2 + 0 + 0) / 3)
    assert m["recall_at_2"] == pytest.approx((1 / 2 + 0 + 0) / 3)
    ideal_a = 1 + 1 / math.log2(3)
    assert m["ndcg_at_2"] == pytest.approx(((1 / math.log2(3)) / ideal_a) / 3)


def test_perfect_ranking_scores_one() -> None:
    recs = pl.DataFrame({"user_id": ["a", "a"], "rank": [1, 2], "item_id": ["x", "y"]})
    holdout = pl.DataFrame({"user_id": ["a", "a"], "item_id": ["y", "x"]})
    m = ranking_metrics(recs, holdout, k=2)
    for name in ("precision_at_2", "recall_at_2", "ndcg_at_2"):
        assert m[name] == pytest.approx(1.0)
