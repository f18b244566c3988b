"""The recommendations suite blocks lists that must not be published."""

from __future__ import annotations

import polars as pl
import pytest

from pipelines.suites.recommendations import list_aggregates, validate_recommendations

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


def _check(rows: list[tuple[str, int, str, float]], k: int = K) -> list[str]:
    aggregates = list_aggregates(
        _recs(rows), k=k, expected_users=USERS, excluded=SEEN, available_items=AVAILABLE
    )
    return validate_recommendations(aggregates, n_users=USERS.len())


def test_good_lists_pass() -> None:
    assert _check(GOOD) == []


@pytest.mark.parametrize(
    ("change", "expectation"),
    [
        (lambda r: [*r[:2], ("a", 3, "i1", 0.7), *r[3:]], "'n_items = n_rows'"),
        (lambda r: [*r[:2], ("a", 3, "i5", 0.7), *r[3:]], "on column 'n_seen'"),
        (lambda r: r[:3], "'n_rows = expected_rows'"),
        (lambda r: [*r[:2], ("a", 3, "i9", 0.7), *r[3:]], "on column 'n_unavailable'"),
        (lambda r: [*r[:2], ("a", 3, "i3", float("nan")), *r[3:]], "on column 'n_nonfinite'"),
        (lambda r: [*r[:2], ("a", 4, "i3", 0.7), *r[3:]], "'max_rank = n_rows'"),
        (lambda r: r[:5], "'n_rows = expected_rows'"),
        (lambda r: [*r, ("z", 1, "i1", 0.5)], "on column 'expected_user'"),
        (lambda r: [*r[:2], ("a", 2, "i3", 0.7), *r[3:]], "'n_ranks = n_rows'"),
    ],
    ids=[
        "duplicate item",
        "seen item",
        "missing user",
        "unavailable item",
        "nan score",
        "rank beyond k",
        "short list",
        "stranger",
        "duplicate rank",
    ],
)
def test_bad_lists_are_blocked_naming_the_expectation(change: object, expectation: str) -> None:
    failures = _check(change(GOOD))  # type: ignore[operator]
    assert any(expectation in f for f in failures), failures


def test_a_user_with_fewer_items_than_k_gets_a_shorter_list() -> None:
    # a has seen i5, so only four items may be recommended to a: with k = 5, a's list is 4
    # long and b's 5 long; a 5th row for a would repeat or show a seen item.
    rows = [("a", r, f"i{r}", 1.0 / r) for r in range(1, 5)]
    rows += [("b", r, f"i{r}", 1.0 / r) for r in range(1, 6)]
    assert _check(rows, k=5) == []
    assert any("'n_rows = expected_rows'" in f for f in _check(rows[:3] + rows[4:], k=5))


CATALOG = pl.Series(["i1", "i2", "i3", "i4", "i5", "i9"])  # i9: in the catalog, not available


@pytest.mark.parametrize(
    "change",
    [
        lambda r: r,
        lambda r: [*r[:2], ("a", 3, "i1", 0.7), *r[3:]],
        lambda r: [*r[:2], ("a", 3, "i5", 0.7), *r[3:]],
        lambda r: r[:3],
        lambda r: [*r[:2], ("a", 3, "i9", 0.7), *r[3:]],
        lambda r: [*r[:2], ("a", 3, "i3", float("nan")), *r[3:]],
        lambda r: [*r[:2], ("a", 4, "i3", 0.7), *r[3:]],
        lambda r: r[:5],
        lambda r: [r[0], *r[2:]],
    ],
    ids=[
        "good", "duplicate item", "seen item", "missing user", "unavailable item", "nan score",
        "gap before the last rank", "short list", "no rank 2",
    ],
)  # fmt: skip
def test_coded_aggregates_equal_the_aggregates_of_the_rows(change: object) -> None:
    """The score stage's aggregates, from users x k arrays of item codes (a row's slot is its
    rank), are those of the same lists as rows: the suite's verdicts cannot differ."""
    import numpy as np
    import scipy.sparse as sp

    from pipelines.suites.recommendations import coded_aggregates

    rows = change(GOOD)  # type: ignore[operator]
    width = max(r for _, r, _, _ in rows)
    items = np.full((USERS.len(), width), -1, np.int64)
    scores = np.full(items.shape, -np.inf)
    code = {item: j for j, item in enumerate(CATALOG.to_list())}
    for user, rank, item, score in rows:
        items[USERS.to_list().index(user), rank - 1] = code[item]
        scores[USERS.to_list().index(user), rank - 1] = score
    seen = sp.csr_matrix(([1], ([0], [code["i5"]])), shape=(USERS.len(), CATALOG.len()))
    coded = coded_aggregates(
        USERS, items, scores, np.where(items >= 0, 0, -1), k=K, excluded=seen,
        available=CATALOG.is_in(AVAILABLE.implode()).to_numpy(),
    )  # fmt: skip
    expected = list_aggregates(
        _recs(rows), k=K, expected_users=USERS, excluded=SEEN, available_items=AVAILABLE
    )
    assert coded.to_dicts() == expected.select(coded.columns).to_dicts()
    assert coded.schema == expected.select(coded.columns).schema
