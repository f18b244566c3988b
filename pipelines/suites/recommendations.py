"""The recommendations suite: the lists about to be published, checked with GX.

The score stage writes millions of rows (53k users x 100 on the large preset); handing them all
to GX as pandas cost seconds and gigabytes. The row-level invariants are instead reduced, chunk
by chunk as the lists are written, to one row per user (how many rows, distinct items and ranks,
seen, unavailable or non-finite entries), and GX judges those aggregates: the same verdicts, on
a table as long as the user list. :func:`list_aggregates` reduces a long table of ids (Polars);
:func:`coded_aggregates` the score stage's users x k arrays of item codes, from which the
written rows are made (one compiled pass; the same aggregates,
``tests/unit/test_recommendations_suite.py``).
"""

from __future__ import annotations

from pathlib import Path

import great_expectations as gx
import numpy as np
import polars as pl
import scipy.sparse as sp
from numba import njit

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


def coded_aggregates(
    user_ids: pl.Series,
    items: np.ndarray,
    scores: np.ndarray,
    source: np.ndarray,
    *,
    k: int,
    excluded: sp.csr_matrix,
    available: np.ndarray,
) -> pl.DataFrame:
    """:func:`list_aggregates` of lists held as codes: row ``r`` of ``items`` (users x k item
    positions in the catalog, -1: no row) is the list of ``user_ids[r]``, its slot ``c`` the
    row of rank ``c + 1``, with ``scores`` and ``source`` (a code into the known sources; -1:
    none). ``excluded``: users x catalog items, non-zero where the pair must not be shown;
    ``available``: the catalog items that may be recommended at all."""
    n_users = user_ids.len()
    if items.shape[0] != n_users or excluded.shape[0] != n_users:
        raise ValueError(f"{items.shape[0]} lists, {excluded.shape[0]} rows of pairs for {n_users}")
    pairs = sp.csr_matrix(excluded)
    counts = _list_counts(
        np.ascontiguousarray(items, np.int64), np.ascontiguousarray(scores, np.float64),
        np.ascontiguousarray(source, np.int64), np.asarray(pairs.indptr, np.int64),
        np.asarray(pairs.indices, np.int64), np.asarray(available, np.bool_),
    )  # fmt: skip
    n_rows = counts[:, 0]
    n_available = int(np.count_nonzero(available))
    return pl.DataFrame(
        {
            C.user_id: user_ids,
            "expected_user": np.ones(n_users, np.bool_),
            "expected_rows": np.minimum(k, n_available - counts[:, 8]),
            "n_rows": n_rows,
            "n_items": counts[:, 1],
            "n_ranks": n_rows,  # one slot, one rank
            "min_rank": pl.Series(counts[:, 2]).set(pl.Series(n_rows == 0), None),
            "max_rank": counts[:, 3],
            "n_unavailable": counts[:, 4],
            "n_nonfinite": counts[:, 5],
            "n_bad_source": counts[:, 6],
            "n_seen": counts[:, 7],
        }
    ).sort(C.user_id)


@njit(cache=True, nogil=True)
def _list_counts(
    items: np.ndarray,
    scores: np.ndarray,
    source: np.ndarray,
    ex_ptr: np.ndarray,
    ex_idx: np.ndarray,
    available: np.ndarray,
) -> np.ndarray:
    """Per list: rows, distinct items, first and last rank, unavailable, non-finite, bad source,
    excluded-pair rows, and the available items among the user's excluded pairs."""
    n_users, k = items.shape
    out = np.zeros((n_users, 9), np.int64)
    excluded = np.zeros(available.shape[0], np.bool_)
    stamp = np.full(available.shape[0], -1, np.int64)  # the last list an item was in
    for r in range(n_users):
        for p in range(ex_ptr[r], ex_ptr[r + 1]):
            if not excluded[ex_idx[p]]:
                excluded[ex_idx[p]] = True
                out[r, 8] += available[ex_idx[p]]
        for c in range(k):
            item = items[r, c]
            if item < 0:
                continue
            out[r, 0] += 1
            if out[r, 0] == 1:
                out[r, 2] = c + 1
            out[r, 3] = c + 1
            if stamp[item] != r:
                stamp[item] = r
                out[r, 1] += 1
            out[r, 4] += not available[item]
            out[r, 5] += not np.isfinite(scores[r, c])
            out[r, 6] += source[r, c] < 0
            out[r, 7] += excluded[item]
        for p in range(ex_ptr[r], ex_ptr[r + 1]):
            excluded[ex_idx[p]] = False
    return out


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
