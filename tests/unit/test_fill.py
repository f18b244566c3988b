from __future__ import annotations

import polars as pl

from models.policy import fill_to_k


def _recs(rows: list[tuple[str, int, str, str]]) -> pl.DataFrame:
    return pl.DataFrame(
        rows, schema=["user_id", "rank", "item_id", "source"], orient="row"
    ).with_columns(pl.col("rank").cast(pl.Int32), score=pl.lit(1.0))


def test_fill_to_k_tops_up_from_fallback_without_repeating_items() -> None:
    primary = _recs([("a", 1, "x", "model"), ("b", 1, "y", "model"), ("b", 2, "z", "model")])
    fallback = _recs([(u, r, i, "popular") for u in "abc" for r, i in enumerate("xyz", 1)])
    got = fill_to_k(primary, fallback, 2).select("user_id", "rank", "item_id", "source")
    assert got.sort("user_id", "rank").rows() == [
        ("a", 1, "x", "model"),
        ("a", 2, "y", "popular"),
        ("b", 1, "y", "model"),
        ("b", 2, "z", "model"),
        ("c", 1, "x", "popular"),
        ("c", 2, "y", "popular"),
    ]


def test_full_lists_pass_through_and_match_the_merge_of_everyone() -> None:
    # "a" has k=2 items already (kept as they are), "b" one (topped up), "c" none.
    primary = _recs([("a", 1, "z", "model"), ("a", 2, "x", "model"), ("b", 1, "x", "model")])
    fallback = _recs([(u, r, i, "popular") for u in "abc" for r, i in enumerate("xyz", 1)])
    got = fill_to_k(primary, fallback, 2).select("user_id", "rank", "item_id", "source")
    assert got.rows() == [
        ("a", 1, "z", "model"),
        ("a", 2, "x", "model"),
        ("b", 1, "x", "model"),
        ("b", 2, "y", "popular"),
        ("c", 1, "x", "popular"),
        ("c", 2, "y", "popular"),
    ]
