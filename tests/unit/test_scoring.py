from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from models.scoring import KernelRules, select_top_k, top_k, top_k_sparse


def _brute(
    users: np.ndarray, items: np.ndarray, k: int, exclude: np.ndarray, allowed: np.ndarray
) -> np.ndarray:
    scores = users @ items.T
    scores[exclude] = -np.inf
    scores[:, ~allowed] = -np.inf
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize(("block", "threads"), [(3, 1), (1000, 1), (4, 2)])
def test_matches_brute_force_with_exclusions(block: int, threads: int) -> None:
    rng = np.random.default_rng(3)
    users, items = rng.normal(size=(17, 5)), rng.normal(size=(40, 5))
    exclude = rng.random((17, 40)) < 0.2
    allowed = rng.random(40) < 0.8
    idx, scores = top_k(
        users, items, 6, exclude=sp.csr_matrix(exclude), allowed=allowed, block=block,
        num_threads=threads,
    )  # fmt: skip
    expected = _brute(users, items, 6, exclude, allowed)
    np.testing.assert_array_equal(idx, expected)
    assert np.all(np.diff(scores, axis=1) <= 0)
    assert not exclude[np.arange(17)[:, None], idx].any()
    assert allowed[idx].all()


def test_too_few_candidates_pads_with_minus_one() -> None:
    users = np.ones((2, 1))
    items = np.array([[3.0], [2.0], [1.0]])
    exclude = sp.csr_matrix(np.array([[1, 0, 0], [0, 0, 0]]))
    idx, scores = top_k(users, items, 3, exclude=exclude, allowed=np.array([True, True, False]))
    assert idx.tolist() == [[1, -1, -1], [0, 1, -1]]
    assert scores[0, 0] == 2.0
    assert np.isneginf(scores[0, 1])


def _brute_with_rules(
    scores: np.ndarray,
    k: int,
    exclude: np.ndarray,
    allowed: np.ndarray,
    rules: KernelRules,
) -> np.ndarray:
    """Full sort by (-score, item) of every choosable item, then the greedy category cap."""
    boosted = scores + (rules.boost if rules.boost is not None else 0.0)
    out = np.full((scores.shape[0], k), -1, dtype=np.int64)
    for u in range(scores.shape[0]):
        order = sorted(
            (j for j in range(scores.shape[1]) if allowed[j] and not exclude[u, j]),
            key=lambda j: (-boosted[u, j], j),
        )
        counts: dict[int, int] = {}
        taken = []
        for j in order:
            code = int(rules.category[j]) if rules.category is not None else -1
            if code >= 0 and rules.max_per_category:
                if counts.get(code, 0) >= rules.max_per_category:
                    continue
                counts[code] = counts.get(code, 0) + 1
            taken.append(j)
            if len(taken) == k:
                break
        out[u, : len(taken)] = taken
    return out


RULES = [
    KernelRules(),
    KernelRules(max_per_category=2),
    KernelRules(boost=np.float32(0.5) * (np.arange(3000) % 17 == 0).astype(np.float32)),
]


@pytest.mark.parametrize("rules", RULES, ids=["none", "category-cap", "boost"])
@pytest.mark.parametrize("threads", [1, 2])
def test_large_catalog_matches_full_sort_with_ties_and_rules(
    rules: KernelRules, threads: int
) -> None:
    # 3,000 items and k = 12: the kernel's slice bound prunes most of each row, which the
    # small cases above never reach; scores rounded to create many ties (broken by item).
    rng = np.random.default_rng(11)
    users = np.round(rng.normal(size=(64, 4)), 1).astype(np.float32)
    items = np.round(rng.normal(size=(3000, 4)), 1).astype(np.float32)
    items[7] = items[8] = items[2999]
    exclude = rng.random((64, 3000)) < 0.01
    allowed = rng.random(3000) < 0.97
    if rules.max_per_category:
        rules = KernelRules(category=rng.integers(-1, 6, 3000).astype(np.int32), max_per_category=2)
    idx, scores = top_k(
        users, items, 12, exclude=sp.csr_matrix(exclude), allowed=allowed, rules=rules,
        block=16, num_threads=threads,
    )  # fmt: skip
    expected = _brute_with_rules(users @ items.T, 12, exclude, allowed, rules)
    np.testing.assert_array_equal(idx, expected)
    assert np.all(np.diff(scores, axis=1) <= 0)


def test_category_cap_stops_at_what_the_catalog_allows() -> None:
    # Three items of category 0 and one of 1; at most one per category: two slots filled.
    users = np.ones((1, 1), np.float32)
    items = np.array([[4.0], [3.0], [2.0], [1.0]], np.float32)
    rules = KernelRules(category=np.array([0, 0, 0, 1], np.int32), max_per_category=1)
    idx, _ = top_k(users, items, 3, rules=rules)
    assert idx.tolist() == [[0, 3, -1]]


def test_select_does_not_modify_the_scores() -> None:
    scores = np.array([[1.0, 2.0, 3.0]], np.float32)
    idx, best = select_top_k(scores, 2, sp.csr_matrix(np.array([[0, 0, 1]])), None)
    assert idx.tolist() == [[1, 0]]
    assert best.tolist() == [[2.0, 1.0]]
    assert scores.tolist() == [[1.0, 2.0, 3.0]]


def test_negative_zero_ties_with_zero_by_position() -> None:
    # 40 items and k = 2 take the grouped path (40 >= 16 k); -0.0 and 0.0 are one score, so
    # the tie goes to the lower position whichever of the two carries the sign.
    for first, second in ((0.0, -0.0), (-0.0, 0.0)):
        scores = np.full((1, 40), -1.0, np.float32)
        scores[0, 3], scores[0, 5] = first, second
        idx, best = select_top_k(scores, 2, None, None)
        assert idx.tolist() == [[3, 5]]
        assert best.tolist() == [[0.0, 0.0]]


def test_unavailable_items_are_left_out_of_the_product_and_mapped_back() -> None:
    # Every other item unavailable, one user's best available item excluded: the positions
    # returned are the catalog's, not the compacted product's columns.
    rng = np.random.default_rng(5)
    users, items = rng.normal(size=(9, 3)), rng.normal(size=(64, 3))
    allowed = np.arange(64) % 2 == 1
    exclude = np.zeros((9, 64), bool)
    exclude[0, int(np.argmax(np.where(allowed, users[0] @ items.T, -np.inf)))] = True
    idx, _ = top_k(users, items, 3, exclude=sp.csr_matrix(exclude), allowed=allowed, block=4)
    np.testing.assert_array_equal(idx, _brute(users, items, 3, exclude, allowed))
    assert (idx % 2 == 1).all()


def test_nothing_available_leaves_every_slot_empty() -> None:
    idx, scores = top_k(np.ones((2, 2)), np.ones((5, 2)), 3, allowed=np.zeros(5, bool))
    assert idx.tolist() == [[-1, -1, -1], [-1, -1, -1]]
    assert np.isneginf(scores).all()


@pytest.mark.parametrize("rules", RULES, ids=["none", "category-cap", "boost"])
@pytest.mark.parametrize(("block", "threads"), [(5, 1), (1000, 1), (7, 2)])
def test_sparse_history_times_weights_matches_full_sort(
    rules: KernelRules, block: int, threads: int
) -> None:
    # EASE's path: a sparse history times items x items weights, against the dense product
    # fully sorted; integer weights (exact sums in any order) make ties, broken by position;
    # users with no history score all zero.
    rng = np.random.default_rng(13)
    n_users, n_items = 40, 3000
    positives = rng.random((n_users, n_items)) < 0.004
    positives[[0, 5]] = False  # two users with no history
    history = sp.csr_matrix(positives.astype(np.float32))
    weights = np.round(rng.normal(size=(n_items, n_items)) * 3).astype(np.float32)
    exclude = (history.toarray() > 0) | (rng.random((n_users, n_items)) < 0.01)
    allowed = rng.random(n_items) < 0.97
    if rules.max_per_category:
        rules = KernelRules(
            category=rng.integers(-1, 6, n_items).astype(np.int32), max_per_category=2
        )
    idx, scores = top_k_sparse(
        history, weights, 12, exclude=sp.csr_matrix(exclude), allowed=allowed, rules=rules,
        block=block, num_threads=threads,
    )  # fmt: skip
    dense = history.toarray().astype(np.float32) @ weights
    np.testing.assert_array_equal(idx, _brute_with_rules(dense, 12, exclude, allowed, rules))
    assert np.all(np.diff(scores, axis=1) <= 0)


def test_sparse_with_too_few_available_items_pads_with_minus_one() -> None:
    history = sp.csr_matrix(np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]], np.float32))
    weights = np.array([[0, 3, 2], [1, 0, 1], [1, 1, 0]], np.float32)
    idx, scores = top_k_sparse(
        history, weights, 3, exclude=sp.csr_matrix(history), allowed=np.array([True, True, False])
    )
    # User 0: item 0 seen, item 2 unavailable; user 1 has no history: zeros, by position.
    assert idx.tolist() == [[1, -1, -1], [0, 1, -1]]
    assert scores[0, 0] == 3.0
    with pytest.raises(ValueError, match="weights"):
        top_k_sparse(history, weights[:2], 3)
