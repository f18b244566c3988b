from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from models.scoring import top_k


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
