"""The recommendations suite blocks lists that must not be published."""

from __future__ import annotations

import polars as pl
import pytest

from pipelines.suites.recommendations import validate_recommendations

K = 3
USERS = pl.Series(["a", "b"])
AVAILABLE = pl.Series(["i1", "i2", "i3", "i4", "i5"])
SEEN = pl.DataFrame({"user_id": ["a"], "item_id": ["i5"]})


def _recs(rows: list[tuple[str, int, str, float]]) -> pl.DataFrame:
    return pl.DataFrame(
        rows, schema=["user_id", "rank", "item_id", "score"], orient="row"
    ).with_columns(pl.col("rank").cast(pl.Int32), source=pl.lit("model"))


GOOD = [("a", 1, "i1", 0.9), ("a", 2, "i2", 0.8), ("a", 3, "i3", 0.7),
        ("b", 1, "i5", 0.9), ("b", 2, "i1", 0.5), ("b", 3, "i4", 0.1)]  # fmt: skip


def _check(rows: list[tuple[str, int, str, float]]) -> list[str]:
    return validate_recommendations(
        _recs(rows), k=K, expected_users=USERS, seen=SEEN, available_items=AVAILABLE
    )


def test_good_lists_pass() -> None:
    assert _check(GOOD) == []


@pytest.mark.parametrize(
    ("change", "expectation"),
    [
        (lambda r: [*r[:2], ("a", 3, "i1", 0.7), *r[3:]], "expect_compound_columns_to_be_unique"),
        (lambda r: [*r[:2], ("a", 3, "i5", 0.7), *r[3:]], "on column 'already_seen'"),
        (lambda r: r[:3], "expect_column_unique_value_count_to_be_between on column 'user_id'"),
        (lambda r: [*r[:2], ("a", 3, "i9", 0.7), *r[3:]], "on column 'available_item'"),
        (lambda r: [*r[:2], ("a", 3, "i3", float("nan")), *r[3:]], "on column 'score'"),
        (lambda r: [*r[:2], ("a", 4, "i3", 0.7), *r[3:]], "on column 'rank'"),
        (lambda r: r[:5], "expect_table_row_count_to_equal"),
    ],
    ids=[
        "duplicate item",
        "seen item",
        "missing user",
        "unavailable item",
        "nan score",
        "rank beyond k",
        "short list",
    ],
)
def test_bad_lists_are_blocked_naming_the_expectation(change: object, expectation: str) -> None:
    failures = _check(change(GOOD))  # type: ignore[operator]
    assert any(expectation in f for f in failures), failures
