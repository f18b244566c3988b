"""The recommendations suite: the lists about to be published, checked with GX.

The score stage writes millions of rows (53k users x 100 on the large preset); handing them all
to GX as pandas cost seconds and gigabytes. The row-level invariants are instead reduced in
Polars, chunk by chunk as the lists are written, to one row per user (:func:`list_aggregates`:
how many rows, distinct items and ranks, seen, unavailable or non-finite entries), and GX judges
those aggregates: the same verdicts, on a table as long as the user list.
"""

from __future__ import annotations

from pathlib import Path

import great_expectations as gx
import polars as pl

from features.contracts import RECOMMENDATION_SOURCES, C
from pipelines.suites.runner import describe, run_expectations

_COUNTS = ("n_seen", "n_unavailable", "n_nonfinite", "n_bad_source")


def recommendations_suite(n_users: int) -> gx.ExpectationSuite:
    """One row per user of :func:`list_aggregates`: every one of the ``n_users`` expected users
    present once and no stranger (``expected_user``); each list as long as the user allows
    (``expected_rows``: k, or fewer when fewer items may be recommended to them); ranks 1..n
    without gaps; no item twice; no item the user has already interacted with or blocked
    (``n_seen``), no unavailable item, no non-finite score, only known sources."""
    e = gx.expectations
    suite = gx.ExpectationSuite(name="recommendations")
    for expectation in (
        e.ExpectTableRowCountToEqual(value=n_users),
        e.ExpectColumnValuesToBeUnique(column=C.user_id),
        e.ExpectColumnValuesToBeInSet(column="expected_user", value_set=[True]),
        e.ExpectColumnPairValuesToBeEqual(column_A="n_rows", column_B="expected_rows"),
        e.ExpectColumnPairValuesToBeEqual(column_A="n_items", column_B="n_rows"),
        e.ExpectColumnPairValuesToBeEqual(column_A="n_ranks", column_B="n_rows"),
        e.ExpectColumnPairValuesToBeEqual(column_A="max_rank", column_B="n_rows"),
        e.ExpectColumnValuesToBeBetween(column="min_rank", min_value=1, max_value=1),
        *(e.ExpectColumnValuesToBeBetween(column=c, min_value=0, max_value=0) for c in _COUNTS),
    ):
        suite.add_expectation(expectation)
    return suite


def list_aggregates(
    recs: pl.DataFrame,
    *,
    k: int,
    expected_users: pl.Series,
    excluded: pl.DataFrame,
    available_items: pl.Series,
) -> pl.DataFrame:
    """One row per user of ``expected_users`` or of ``recs`` (a stranger): the counts
    :func:`recommendations_suite` judges.

    Args:
        recs: one row per user_id x rank (``user_id, rank, item_id, score, source``).
        k: the list length.
        expected_users: the users these lists are for.
        excluded: (user_id, item_id) pairs never to recommend (seen, blocklist), each once.
        available_items: the items that may be recommended at all.
    """
    pairs = excluded.select(C.user_id, C.item_id)
    # Rows on an excluded pair, per user: a semi-join of the keys alone (a left join carried
    # every column of 1.6M rows per chunk to find the few, usually none, that match).
    seen = (
        recs.select(C.user_id, C.item_id)
        .join(pairs, on=[C.user_id, C.item_id], how="semi")
        .group_by(C.user_id)
        .agg(n_seen=pl.len().cast(pl.Int64))
    )
    flagged = recs.with_columns(
        _unavailable=(~pl.col(C.item_id).is_in(available_items.implode())).cast(pl.Int64),
        _nonfinite=(~pl.col(C.score).is_finite()).fill_null(True).cast(pl.Int64),
        _bad_source=(~pl.col(C.source).is_in(list(RECOMMENDATION_SOURCES))).cast(pl.Int64),
    )
    lists = (
        flagged.group_by(C.user_id)
        .agg(
            n_rows=pl.len().cast(pl.Int64),
            n_items=pl.col(C.item_id).n_unique().cast(pl.Int64),
            n_ranks=pl.col(C.rank).n_unique().cast(pl.Int64),
            min_rank=pl.col(C.rank).min().cast(pl.Int64),
            max_rank=pl.col(C.rank).max().cast(pl.Int64),
            n_unavailable=pl.col("_unavailable").sum(),
            n_nonfinite=pl.col("_nonfinite").sum(),
            n_bad_source=pl.col("_bad_source").sum(),
        )
        .join(seen, on=C.user_id, how="left")
        .with_columns(pl.col("n_seen").fill_null(0))
    )
    n_available = available_items.n_unique()
    blocked = (
        pairs.filter(pl.col(C.item_id).is_in(available_items.implode()))
        .group_by(C.user_id)
        .agg(n_blocked=pl.len())
    )
    expected = (
        pl.DataFrame({C.user_id: expected_users.unique()})
        .join(blocked, on=C.user_id, how="left")
        .select(
            C.user_id,
            expected_user=pl.lit(True),
            expected_rows=pl.min_horizontal(
                pl.lit(k), pl.lit(n_available) - pl.col("n_blocked").fill_null(0)
            ).cast(pl.Int64),
        )
    )
    counts = [c for c in lists.columns if c != C.user_id and c not in ("min_rank", "max_rank")]
    return (
        expected.join(lists, on=C.user_id, how="full", coalesce=True)
        .with_columns(
            pl.col("expected_user").fill_null(False),
            pl.col("expected_rows").fill_null(0),
            *(pl.col(c).fill_null(0) for c in counts),
            pl.col("max_rank").fill_null(0),
        )
        .sort(C.user_id)
    )


def validate_recommendations(
    aggregates: pl.DataFrame, *, n_users: int, gx_root: Path | None = None
) -> list[str]:
    """Run :func:`recommendations_suite` on :func:`list_aggregates` (of every chunk, concatenated);
    returns the failures (empty when the lists may be published), each naming the expectation
    and a few offending values."""
    outcomes = run_expectations(
        aggregates.to_pandas(), lambda: recommendations_suite(n_users), gx_root
    )
    return [describe(o) for o in outcomes if not o.success]
