"""Top-K scoring: the matrix product in user blocks, then one compiled pass per row that skips
excluded and blocked items, applies the list rules and keeps the best ``k`` in a small heap.

``LightFM.predict`` on every user x item pair is slow (28 s for 53k x 10k here), and a full-row
``argpartition`` pays for a negated copy and a second pass to mask excluded pairs. Here the dense
block ``U @ V.T`` is scored in float32 (BLAS), and :func:`_select_rows` (numba, no GIL) walks each
row once: a blocked or already-seen item is skipped where it stands, the rest meet a k-sized
min-heap, so the selection costs about one comparison per item. Blocks run on threads, so both
cores score and select at once; memory is ``block x n_items`` floats per thread.

Ties are broken by item position (lower first), so the lists are deterministic and equal a full
sort by ``(-score, position)``; ``tests/unit/test_scoring.py`` checks that against brute force.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from numba import njit
from threadpoolctl import threadpool_limits


@dataclass(frozen=True)
class KernelRules:
    """List rules aligned to one model's item order (see :mod:`models.rules`).

    Attributes:
        boost: added to every user's score of each item (float32, one per item), or None.
        category: each item's category code (int32, -1: none), or None.
        max_per_category: at most this many items of one category in a list (0: no cap).
    """

    boost: np.ndarray | None = None
    category: np.ndarray | None = None
    max_per_category: int = 0


_EMPTY_F = np.zeros(0, np.float32)
_EMPTY_I = np.zeros(0, np.int32)
_EMPTY_B = np.zeros(0, np.bool_)


def top_k(
    user_vectors: np.ndarray,
    item_vectors: np.ndarray,
    k: int,
    *,
    exclude: sp.csr_matrix | None = None,
    allowed: np.ndarray | None = None,
    rules: KernelRules | None = None,
    block: int = 2048,
    num_threads: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` items per user by dot product.

    Args:
        user_vectors: users x d.
        item_vectors: items x d.
        k: items per user (capped at the number of items).
        exclude: users x items; non-zero entries are never recommended (already seen, blocked).
        allowed: boolean mask over items; False items are never recommended (unavailable).
        rules: score boosts and a per-category cap, aligned to the items.
        block: users scored per matrix product.
        num_threads: blocks scored in parallel.

    Returns:
        ``(items, scores)``, each users x k, best first. A user with fewer than ``k``
        recommendable items gets index -1 and score -inf in the remaining slots.
    """
    n_users, n_items = user_vectors.shape[0], item_vectors.shape[0]
    k = min(k, n_items)
    items_t = np.ascontiguousarray(item_vectors.T, dtype=np.float32)
    users = np.ascontiguousarray(user_vectors, dtype=np.float32)
    out_idx = np.full((n_users, k), -1, dtype=np.int64)
    out_score = np.full((n_users, k), -np.inf, dtype=np.float32)
    excluded = _csr(exclude, n_users, n_items)

    def score_block(start: int) -> None:
        stop = min(start + block, n_users)
        scores = users[start:stop] @ items_t
        ex = excluded[start:stop] if excluded is not None else None
        select_top_k(
            scores, k, ex, None if allowed is None else ~allowed, rules,
            out=(out_idx[start:stop], out_score[start:stop]),
        )  # fmt: skip

    starts = range(0, n_users, block)
    if num_threads > 1 and n_users > block:
        # One BLAS thread per block: the blocks are the parallelism (BLAS threads on top of
        # them fight for the same cores: 1.5 s instead of 1.0 s on 53k x 10k here).
        with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(num_threads) as pool:
            list(pool.map(score_block, starts))
    else:
        for start in starts:
            score_block(start)
    return out_idx, out_score


def _csr(matrix: sp.csr_matrix | None, n_rows: int, n_cols: int) -> sp.csr_matrix | None:
    if matrix is None:
        return None
    if matrix.shape != (n_rows, n_cols):
        raise ValueError(f"exclusion matrix {matrix.shape}, expected {(n_rows, n_cols)}")
    # No copy when it is CSR already: this runs once per block, on the scoring hot path (the
    # kernel only marks each row's excluded columns, in any order).
    return matrix if isinstance(matrix, sp.csr_matrix) else sp.csr_matrix(matrix)


def select_top_k(
    scores: np.ndarray,
    k: int,
    exclude: sp.csr_matrix | None,
    blocked: np.ndarray | None,
    rules: KernelRules | None = None,
    *,
    out: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` columns per row of a (users x items) score block: columns in ``blocked`` and
    entries of ``exclude`` are never chosen, ``rules`` boost scores and cap categories; only
    finite scores are chosen. Returns ``(items, scores)`` (written into ``out`` when given),
    best first, ties by column, with -1 / -inf where a row has fewer than ``k`` choosable
    items. ``scores`` is not modified."""
    n_rows, n_items = scores.shape
    k = min(k, n_items)
    if out is None:
        out = (np.full((n_rows, k), -1, np.int64), np.full((n_rows, k), -np.inf, np.float32))
    if n_rows == 0 or k == 0:
        return out
    ex = _csr(exclude, n_rows, n_items) if exclude is not None else None
    rules = rules or KernelRules()
    _select_rows(
        np.ascontiguousarray(scores, dtype=np.float32),
        k,
        np.asarray(ex.indptr, np.int64) if ex is not None else np.zeros(n_rows + 1, np.int64),
        np.asarray(ex.indices, np.int32) if ex is not None else _EMPTY_I,
        np.ascontiguousarray(blocked, dtype=np.bool_) if blocked is not None else _EMPTY_B,
        np.ascontiguousarray(rules.boost, dtype=np.float32)
        if rules.boost is not None
        else _EMPTY_F,
        np.ascontiguousarray(rules.category, dtype=np.int32)
        if rules.category is not None and rules.max_per_category > 0
        else _EMPTY_I,
        int(rules.max_per_category),
        out[0],
        out[1],
    )
    return out


@njit(cache=True, nogil=True, inline="always")
def _worse(s_a: float, i_a: int, s_b: float, i_b: int) -> bool:
    """Whether (score a, item a) ranks below (score b, item b): lower score, or a tie and a
    later item."""
    return s_a < s_b or (s_a == s_b and i_a > i_b)


@njit(cache=True, nogil=True)
def _sift_down(hs: np.ndarray, hi: np.ndarray, size: int, pos: int) -> None:
    # Min-heap on rank order: the root is the worst kept item.
    while True:
        left = 2 * pos + 1
        if left >= size:
            return
        child = left
        right = left + 1
        if right < size and _worse(hs[right], hi[right], hs[left], hi[left]):
            child = right
        if _worse(hs[child], hi[child], hs[pos], hi[pos]):
            hs[pos], hs[child] = hs[child], hs[pos]
            hi[pos], hi[child] = hi[child], hi[pos]
            pos = child
        else:
            return


@njit(cache=True, nogil=True)
def _sift_up(hs: np.ndarray, hi: np.ndarray, pos: int) -> None:
    while pos > 0:
        parent = (pos - 1) // 2
        if _worse(hs[pos], hi[pos], hs[parent], hi[parent]):
            hs[pos], hs[parent] = hs[parent], hs[pos]
            hi[pos], hi[parent] = hi[parent], hi[pos]
            pos = parent
        else:
            return


@njit(cache=True, nogil=True, fastmath=True)
def _masked_row(row: np.ndarray, blocked: np.ndarray, boost: np.ndarray, out: np.ndarray) -> None:
    """``out`` = the row's (boosted) scores, -inf where an item is blocked. One pass over
    contiguous floats with no branch, so it vectorises."""
    has_blocked = blocked.shape[0] > 0
    has_boost = boost.shape[0] > 0
    for j in range(row.shape[0]):
        v = row[j] + boost[j] if has_boost else row[j]
        out[j] = -np.inf if has_blocked and blocked[j] else v


@njit(cache=True, nogil=True, fastmath=True)
def _slice_maxima(row: np.ndarray, width: int, maxima: np.ndarray) -> int:
    """Maximum of each ``width``-wide slice of the row into ``maxima``; returns the number of
    slices. Contiguous floats, so the maxima vectorise."""
    n_items = row.shape[0]
    n_slices: int = (n_items + width - 1) // width
    for g in range(n_slices):
        lo = g * width
        hi = min(n_items, lo + width)
        best = -np.inf
        for j in range(lo, hi):
            v = row[j]
            best = v if v > best else best
        maxima[g] = best
    return n_slices


@njit(cache=True, nogil=True)
def _nth_largest(values: np.ndarray, n_values: int, nth: int, scratch: np.ndarray) -> float:
    """The ``nth`` largest (1-based) of ``values[:n_values]``: quickselect on a copy in
    ``scratch`` (numba's ``np.partition`` allocates and costs several times more here)."""
    for i in range(n_values):
        scratch[i] = values[i]
    target = n_values - nth  # its index in ascending order
    lo, hi = 0, n_values - 1
    while lo < hi:
        mid = (lo + hi) // 2
        # median of three as the pivot, moved to hi
        if scratch[mid] < scratch[lo]:
            scratch[mid], scratch[lo] = scratch[lo], scratch[mid]
        if scratch[hi] < scratch[lo]:
            scratch[hi], scratch[lo] = scratch[lo], scratch[hi]
        if scratch[mid] < scratch[hi]:
            scratch[mid], scratch[hi] = scratch[hi], scratch[mid]
        pivot = scratch[hi]
        store = lo
        for i in range(lo, hi):
            if scratch[i] < pivot:
                scratch[i], scratch[store] = scratch[store], scratch[i]
                store += 1
        scratch[store], scratch[hi] = scratch[hi], scratch[store]
        if store == target:
            return float(scratch[store])
        if store < target:
            lo = store + 1
        else:
            hi = store - 1
    return float(scratch[lo])


@njit(cache=True, nogil=True)
def _best_m(
    row: np.ndarray,
    m: int,
    ex_idx: np.ndarray,
    ex_start: int,
    ex_stop: int,
    blocked: np.ndarray,
    boost: np.ndarray,
    masked: np.ndarray,
    maxima: np.ndarray,
    hs: np.ndarray,
    hi: np.ndarray,
) -> int:
    """The best ``m`` choosable items of one row, sorted best first into ``hs``/``hi``; returns
    how many were kept (fewer than ``m`` only when the row has no more)."""
    n_items = row.shape[0]
    # Choosable scores only: blocked and excluded items become -inf in a scratch copy.
    _masked_row(row, blocked, boost, masked)
    for p in range(ex_start, ex_stop):
        masked[ex_idx[p]] = -np.inf
    # Slice the row into 4m slices: the m-th best slice maximum is a bound that at least m
    # choosable items reach (each slice maximum is a different item), so only the slices whose
    # maximum reaches it hold candidates - about a quarter of the row.
    width = n_items
    bound = -np.inf
    n_slices = 1
    if m * 16 <= n_items:
        width = n_items // (4 * m)
        n_slices = _slice_maxima(masked, width, maxima)
        bound = _nth_largest(maxima, n_slices, m, hs)
        if not np.isfinite(bound):  # fewer than m slices hold a choosable item
            bound = -np.inf
            n_slices, width = 1, n_items
    size = 0
    for g in range(n_slices):
        if n_slices > 1 and maxima[g] < bound:
            continue
        for j in range(g * width, min(n_items, (g + 1) * width)):
            s = masked[j]
            if s < bound or not np.isfinite(s):
                continue
            if size < m:
                hs[size] = s
                hi[size] = j
                _sift_up(hs, hi, size)
                size += 1
            elif _worse(hs[0], hi[0], s, j):
                hs[0] = s
                hi[0] = j
                _sift_down(hs, hi, size, 0)
    # Heap sort in place: pop the worst to the end, so the arrays end best first.
    for end in range(size - 1, 0, -1):
        hs[0], hs[end] = hs[end], hs[0]
        hi[0], hi[end] = hi[end], hi[0]
        _sift_down(hs, hi, end, 0)
    return size


@njit(cache=True, nogil=True)
def _select_rows(
    scores: np.ndarray,
    k: int,
    ex_ptr: np.ndarray,
    ex_idx: np.ndarray,
    blocked: np.ndarray,
    boost: np.ndarray,
    category: np.ndarray,
    cap: int,
    out_idx: np.ndarray,
    out_score: np.ndarray,
) -> None:
    n_rows, n_items = scores.shape
    capped = category.shape[0] > 0 and cap > 0
    n_categories = 0
    if capped:
        n_categories = max(int(category.max()) + 1, 1)
    counts = np.zeros(max(n_categories, 1), np.int64)
    hs = np.empty(n_items, np.float32)
    hi = np.empty(n_items, np.int64)
    maxima = np.empty(n_items, np.float32)
    masked = np.empty(n_items, np.float32)
    for r in range(n_rows):
        for c in range(k):
            out_idx[r, c] = -1
            out_score[r, c] = -np.inf
        if not capped:
            size = _best_m(
                scores[r], k, ex_idx, ex_ptr[r], ex_ptr[r + 1], blocked, boost, masked,
                maxima, hs, hi,
            )  # fmt: skip
            for c in range(size):
                out_idx[r, c] = hi[c]
                out_score[r, c] = hs[c]
            continue
        # A category cap is a greedy walk down the sorted row: the first m items decide it
        # whenever the walk fills k from them, so m grows only when it does not.
        m = min(n_items, 2 * k)
        while True:
            size = _best_m(
                scores[r], m, ex_idx, ex_ptr[r], ex_ptr[r + 1], blocked, boost, masked,
                maxima, hs, hi,
            )  # fmt: skip
            counts[:] = 0
            taken = 0
            for c in range(size):
                code = category[hi[c]]
                if code >= 0:
                    if counts[code] >= cap:
                        continue
                    counts[code] += 1
                out_idx[r, taken] = hi[c]
                out_score[r, taken] = hs[c]
                taken += 1
                if taken == k:
                    break
            if taken == k or size < m or m >= n_items:
                break
            for c in range(taken):
                out_idx[r, c] = -1
                out_score[r, c] = -np.inf
            m = min(n_items, 4 * m)
