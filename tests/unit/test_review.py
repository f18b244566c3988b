"""Review metrics on hand-written lists, expected values worked out by hand."""

from __future__ import annotations

import math

import polars as pl
import pytest

from models.review import beyond_accuracy, per_user_at_k, review_metrics, user_segments


def _recs(rows: list[tuple[str, int, str]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=["user_id", "rank", "item_id"], orient="row").with_columns(
        pl.col("rank").cast(pl.Int32)
    )


RECS = _recs([("a", 1, "x"), ("a", 2, "z"), ("a", 3, "y")])
HOLDOUT = pl.DataFrame({"user_id": ["a", "a", "b"], "item_id": ["x", "y", "w"]})


def test_ranking_metrics_at_two_cutoffs() -> None:
    got = per_user_at_k(RECS, HOLDOUT, (2, 3)).row(0, named=True)
    assert got["user_id"] == "a"
    ideal = 1 + 1 / math.log2(3)
    assert got["precision_at_2"] == 0.5
    assert got["recall_at_2"] == 0.5
    assert got["ndcg_at_2"] == pytest.approx(1 / ideal)
    assert got["map_at_2"] == 0.5  # (1/1) / min(2, 2 relevant)
    assert got["hit_at_2"] == 1.0
    assert got["precision_at_3"] == pytest.approx(2 / 3)
    assert got["recall_at_3"] == 1.0
    assert got["ndcg_at_3"] == pytest.approx((1 + 1 / math.log2(4)) / ideal)
    assert got["map_at_3"] == pytest.approx((1 / 1 + 2 / 3) / 2)
    # b has no list: every metric 0
    b = per_user_at_k(RECS, HOLDOUT, (2, 3)).row(1, named=True)
    assert {v for k, v in b.items() if k != "user_id"} == {0.0}


def test_beyond_accuracy() -> None:
    popularity = pl.DataFrame({"item_id": ["x", "y", "z", "w"], "share": [0.5, 0.25, 0.25, 0.0]})
    category = pl.DataFrame({"item_id": ["x", "y", "z", "w"], "category": ["c1", "c1", "c2", "c2"]})
    got = beyond_accuracy(RECS, popularity, 4, (2, 3), category)
    assert got["coverage_at_2"] == 0.5  # x, z of 4
    assert got["popularity_at_2"] == pytest.approx(0.375)
    assert got["popularity_ratio_at_2"] == pytest.approx(0.375 / 0.25)
    assert got["novelty_at_2"] == pytest.approx((1 + 2) / 2)  # -log2 0.5, -log2 0.25
    assert got["diversity_at_2"] == 1.0  # x (c1), z (c2): the one pair differs
    assert got["diversity_at_3"] == pytest.approx(2 / 3)  # x-y same, x-z and y-z differ


def test_segments_and_new_items() -> None:
    users = pl.DataFrame({"user_id": ["a", "b", "c"], "user_segment": ["warm", "warm", "cold"]})
    counts = pl.DataFrame({"user_id": ["a", "b"], "n_train": [1, 9]})
    segments = user_segments(users, counts)
    assert segments.rows() == [
        ("a", "light"), ("a", "warm"), ("b", "heavy"), ("b", "warm"), ("c", "cold"),
    ]  # fmt: skip
    popularity = pl.DataFrame({"item_id": ["x", "y", "z", "w"], "share": [0.5, 0.25, 0.25, 0.0]})
    got = review_metrics(
        {"model": RECS}, HOLDOUT, segments, pl.Series(["y"]), popularity, 4, ks=(3,)
    )
    assert got["model_precision_at_3"] == pytest.approx((2 / 3 + 0) / 2)
    assert got["model_light_precision_at_3"] == pytest.approx(2 / 3)
    assert got["model_heavy_precision_at_3"] == 0.0
    assert got["model_warm_n_users"] == 2
    assert got["model_new_items_recall_at_3"] == 1.0  # y, the one new item liked, is in a's list


def test_auc_counts_pairs_in_order_with_ties_as_halves() -> None:
    import numpy as np

    from models.review import auc

    scores = np.array([[0.9, 0.5, 0.5, 0.1], [0.1, 0.2, 0.3, 0.4]])
    # user 0 likes item 1 (0.5): above item 3, tied with item 2, item 0 is seen: (1 + 0.5) / 2
    # user 1 likes item 3, the top one: 1.0
    got = auc(scores, [np.array([1]), np.array([3])], [np.array([0]), np.array([], dtype=int)])
    assert got == pytest.approx((0.75 + 1.0) / 2)


def test_intervals_bracket_the_mean_and_collapse_when_every_user_agrees() -> None:
    from models.review import intervals

    recs = _recs([("a", 1, "x"), ("b", 1, "w")])
    got = intervals({"model": recs}, HOLDOUT, (1,))
    assert got["model_precision_at_1"] == (1.0, 1.0)  # both users hit at rank 1
    got = intervals({"model": RECS}, HOLDOUT, (1,))
    low, high = got["model_precision_at_1"]
    assert low == 0.0  # a resample of only b
    assert high == 1.0  # a resample of only a


@pytest.mark.parametrize(
    ("promoted", "serves", "words"),
    [
        (True, True, "was promoted: this version serves"),
        (False, True, "champion's configuration refitted on the new data, and it serves"),
        (False, False, "this version does not serve"),
    ],
)
def test_the_card_says_what_serves(promoted: bool, serves: bool, words: str) -> None:
    from models.review import CardFacts, model_card

    facts = CardFacts(
        name="m", as_of="2026-12-02 00:00:00 UTC", window_start="2026-11-25 00:00:00 UTC",
        volumes={"users": 3}, features={"users": ["country"]}, params={"epochs": 5},
        promoted=promoted, reasons=["vs baseline: +0.1 [+0.05, +0.15]"],
        serving={"warm": "model", "cold": "popular:30"}, serves=serves,
    )  # fmt: skip
    metrics = {"model_precision_at_10": 0.2, "baseline_precision_at_10": 0.1,
               "model_cold_precision_at_10": 0.05, "baseline_cold_precision_at_10": 0.07,
               "model_cold_n_users": 4.0}  # fmt: skip
    card = model_card(facts, metrics, ["model", "baseline"], (5, 10))
    assert words in card
    assert "| precision@10 | 0.2000 | 0.1000 |" in card
    assert "loses to popularity on precision@10 for: cold" in card
    assert "- vs baseline: +0.1 [+0.05, +0.15]" in card
