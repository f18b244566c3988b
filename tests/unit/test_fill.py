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


def test_fill_lists_tops_up_coded_lists_in_place_like_fill_to_k() -> None:
    """The score stage's top-up on item codes: the same lists as the two cases above."""
    import numpy as np

    from models.scoring import fill_lists

    # users a, b, c; items x=0, y=1, z=2; k=2; "a" full, "b" one item, "c" none; source codes
    # 0 (model) and 4 (the fallback's), scores 9 (primary) and the fallback's 3, 2, 1.
    items = np.array([[2, 0], [0, -1], [-1, -1]], np.int64)
    scores = np.array([[9.0, 9.0], [9.0, -np.inf], [-np.inf, -np.inf]])
    source = np.array([[0, 0], [0, -1], [-1, -1]], np.int8)
    short = np.array([1, 2], np.int64)
    extra = np.array([[0, 1, 2], [0, 1, 2]], np.int64)
    extra_scores = np.array([[3.0, 2.0, 1.0], [3.0, 2.0, 1.0]])
    fill_lists(items, scores, source, short, extra, extra_scores, np.array([4, 4], np.int8))
    assert items.tolist() == [[2, 0], [0, 1], [0, 1]]
    assert scores.tolist() == [[9.0, 9.0], [9.0, 2.0], [3.0, 2.0]]
    assert source.tolist() == [[0, 0], [0, 4], [4, 4]]
    # A fallback with too few new items leaves the list short, its empty slots as they were.
    items = np.array([[1, -1, -1]], np.int64)
    scores = np.array([[5.0, -np.inf, -np.inf]])
    source = np.array([[0, -1, -1]], np.int8)
    fill_lists(
        items, scores, source, np.array([0], np.int64), np.array([[1, -1]], np.int64),
        np.array([[2.0, -np.inf]]), np.array([4], np.int8),
    )  # fmt: skip
    assert items.tolist() == [[1, -1, -1]]
    assert source.tolist() == [[0, -1, -1]]


def test_remapped_columns_follow_the_new_order_and_drop_the_unknown() -> None:
    import numpy as np
    import scipy.sparse as sp

    from models.base import positions, remap_columns

    here = pl.Series(["a", "b", "c", "d"])
    there = pl.Series(["c", "a", "e"])
    assert positions(here, there).tolist() == [1, -1, 0, -1]
    pairs = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 0, 1, 1], [0, 1, 0, 0]], np.int8))
    moved = remap_columns(pairs, positions(here, there), there.len())
    assert moved.toarray().tolist() == [[0, 1, 0], [1, 0, 0], [0, 0, 0]]
