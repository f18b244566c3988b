"""The recommendations suite: the lists about to be published, checked with GX."""

from __future__ import annotations

from pathlib import Path

import great_expectations as gx
import polars as pl

from features.contracts import RECOMMENDATION_SOURCES, C
from pipelines.suites.runner import describe, run_expectations


def recommendations_suite(k: int, n_users: int) -> gx.ExpectationSuite:
    """The lists about to be published: exactly ``k`` rows for each of the ``n_users`` expected
    users (none missing, no stranger: ``expected_user``), ranks 1..k, no duplicate rank or item
    per user, finite scores, only available items (``available_item``), none the user has already
    interacted with (``already_seen``). The three flags come from
    :func:`validate_recommendations`."""
    e = gx.expectations
    n = n_users
    suite = gx.ExpectationSuite(name="recommendations")
    for expectation in (
        e.ExpectTableRowCountToEqual(value=k * n),
        e.ExpectColumnUniqueValueCountToBeBetween(column=C.user_id, min_value=n, max_value=n),
        e.ExpectColumnValuesToBeInSet(column="expected_user", value_set=[True]),
        e.ExpectColumnValuesToBeBetween(column=C.rank, min_value=1, max_value=k),
        e.ExpectCompoundColumnsToBeUnique(column_list=[C.user_id, C.rank]),
        e.ExpectCompoundColumnsToBeUnique(column_list=[C.user_id, C.item_id]),
        e.ExpectColumnValuesToNotBeNull(column=C.score),
        e.ExpectColumnValuesToBeBetween(column=C.score, min_value=-1e300, max_value=1e300),
        e.ExpectColumnValuesToBeInSet(column="available_item", value_set=[True]),
        e.ExpectColumnValuesToBeInSet(column="already_seen", value_set=[False]),
        e.ExpectColumnValuesToBeInSet(column=C.source, value_set=list(RECOMMENDATION_SOURCES)),
    ):
        suite.add_expectation(expectation)
    return suite


def validate_recommendations(
    recs: pl.DataFrame,
    *,
    k: int,
    expected_users: pl.Series,
    seen: pl.DataFrame,
    available_items: pl.Series,
    gx_root: Path | None = None,
) -> list[str]:
    """Run :func:`recommendations_suite`; returns the failures (empty when the lists may be
    published), each naming the expectation and a few offending values."""
    flagged = recs.select(C.user_id, C.rank, C.item_id, C.score, C.source).join(
        seen.select(C.user_id, C.item_id).unique().with_columns(already_seen=pl.lit(True)),
        on=[C.user_id, C.item_id],
        how="left",
    )
    flagged = flagged.with_columns(
        pl.col("already_seen").fill_null(False),
        expected_user=pl.col(C.user_id).is_in(expected_users.implode()),
        available_item=pl.col(C.item_id).is_in(available_items.implode()),
    )
    n_users = expected_users.n_unique()
    outcomes = run_expectations(
        flagged.to_pandas(), lambda: recommendations_suite(k, n_users), gx_root
    )
    return [describe(o) for o in outcomes if not o.success]
