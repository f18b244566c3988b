"""Top-K scoring: the matrix product in user blocks, then one compiled pass per row that
prepares it in place (excluded items -inf, boosts added), bounds the best ``k`` and sorts only
the few items above the bound.

``LightFM.predict`` on every user x item pair is slow (28 s for 53k x 10k here), and a full-row
``argpartition`` pays for a negated copy and a second pass to mask excluded pairs. Here the dense
block ``U @ V.T`` is scored in float32 (BLAS) over the available items only, and
:func:`_select_rows` (numba, no GIL) works on each row of that fresh buffer in place: the row's
items fall into 8k strided groups whose maxima are one vectorised element-wise max; a bisection
finds a score that k group maxima reach, so ~k items lie at or above it; those are sorted by one
integer key. Blocks are small enough to stay in cache between the product and the selection,
and run on threads, so both cores score and select at once; memory is ``block x n_items``
floats per thread.

Ties are broken by item position (lower first), so the lists are deterministic and equal a full
sort by ``(-score, position)``; ``tests/unit/test_scoring.py`` checks that against brute force.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
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

    def at(self, positions: np.ndarray) -> KernelRules:
        """The rules of the items at ``positions``, in that order."""
        return KernelRules(
            boost=None if self.boost is None else np.asarray(self.boost, np.float32)[positions],
            category=None
            if self.category is None
            else np.asarray(self.category, np.int32)[positions],
            max_per_category=self.max_per_category,
        )


_EMPTY_F = np.zeros(0, np.float32)
_EMPTY_I = np.zeros(0, np.int32)
_SIGN = np.uint32(0x80000000)  # a float32's sign bit


def top_k(
    user_vectors: np.ndarray,
    item_vectors: np.ndarray,
    k: int,
    *,
    exclude: sp.csr_matrix | None = None,
    allowed: np.ndarray | None = None,
    rules: KernelRules | None = None,
    block: int = 512,
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
    # Unavailable items never enter the product: the columns kept are scored, positions are
    # mapped back at the end (order kept, so ties still break by the original position).
    kept = np.arange(n_items) if allowed is None else np.flatnonzero(allowed)
    items_t = np.ascontiguousarray(np.asarray(item_vectors, dtype=np.float32)[kept].T)
    users = np.ascontiguousarray(user_vectors, dtype=np.float32)

    def product(start: int, stop: int, out: np.ndarray) -> np.ndarray:
        return np.matmul(users[start:stop], items_t, out=out)  # selected in place

    return _in_blocks(product, n_users, n_items, k, kept, exclude, rules, block, num_threads)


def top_k_sparse(
    rows: sp.csr_matrix,
    weights: np.ndarray,
    k: int,
    *,
    exclude: sp.csr_matrix | None = None,
    allowed: np.ndarray | None = None,
    rules: KernelRules | None = None,
    block: int = 512,
    num_threads: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` items per user of ``rows @ weights``: a sparse users x items history times
    an items x items model (EASE). Arguments and result as :func:`top_k`.

    A block's product is compiled (:func:`_sparse_times_dense`: each user's row is the sum of
    the weight rows of their items, in the history's order, so a user's scores do not depend on
    the block or the thread). SciPy's sparse x dense product is single-threaded, and copied a
    weights matrix not in C order on every call (8 of the 14.6 s EASE took, profiled, to score
    16k users on the ``large`` shape). Unavailable items are scored, then set to -inf before
    the selection.
    """
    n_users, n_items = rows.shape
    if weights.shape != (n_items, n_items):
        raise ValueError(f"weights {weights.shape}, expected {(n_items, n_items)}")
    history = sp.csr_matrix(rows, dtype=np.float32)
    model = np.ascontiguousarray(weights, dtype=np.float32)
    indptr = np.asarray(history.indptr, np.int64)
    indices = np.asarray(history.indices, np.int32)
    values = np.asarray(history.data, np.float32)
    blocked = None if allowed is None else np.flatnonzero(~np.asarray(allowed, np.bool_))

    def product(start: int, stop: int, out: np.ndarray) -> np.ndarray:
        _sparse_times_dense(indptr, indices, values, start, stop, model, out)
        if blocked is not None:
            out[:, blocked] = -np.inf
        return out

    n_allowed = n_items if blocked is None else n_items - blocked.size
    return _in_blocks(
        product, n_users, n_items, k, np.arange(n_items), exclude, rules, block, num_threads,
        width=min(k, n_allowed),
    )  # fmt: skip


def _in_blocks(
    product: Callable[[int, int, np.ndarray], np.ndarray],
    n_users: int,
    n_items: int,
    k: int,
    kept: np.ndarray,
    exclude: sp.csr_matrix | None,
    rules: KernelRules | None,
    block: int,
    num_threads: int,
    width: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The block loop of :func:`top_k` and :func:`top_k_sparse`: ``product(start, stop, out)``
    writes the float32 scores of users ``start:stop`` over the ``kept`` item positions (its
    columns) into ``out`` and returns it; they are selected in place, and the selection writes
    each chosen column's item position (``kept[column]``), so no pass maps them back after (it
    cost ~0.3 s of 5.3M lists on the ``large`` shape). ``width``: slots that can be filled
    (default: ``min(k, kept.size)``).

    Each thread scores into one buffer of its own, reused block after block, instead of a
    fresh ``block x items`` array per block (20 MB on the ``large`` shape) for glibc to keep in
    its arenas once freed; the same speed."""
    k = min(k, n_items)
    out_idx = np.full((n_users, k), -1, dtype=np.int64)
    out_score = np.full((n_users, k), -np.inf, dtype=np.float32)
    excluded = _csr(exclude, n_users, n_items)
    column = np.full(n_items, -1, np.int32)
    column[kept] = np.arange(kept.size, dtype=np.int32)
    positions = np.ascontiguousarray(kept, np.int64)
    compact = _compact_rules(rules, kept)
    width = min(k, kept.size) if width is None else width
    if width == 0:  # nothing may be recommended: every slot stays empty
        return out_idx, out_score

    buffers = threading.local()

    def score_block(start: int) -> None:
        stop = min(start + block, n_users)
        if not hasattr(buffers, "scores"):
            buffers.scores = np.empty((min(block, n_users), kept.size), np.float32)
        scores = product(start, stop, buffers.scores[: stop - start])
        ex = excluded[start:stop] if excluded is not None else None
        _select_in_place(scores, width, ex, column, positions, compact,
                         out_idx[start:stop, :width], out_score[start:stop, :width])  # fmt: skip

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


@njit(cache=True, nogil=True)
def _sparse_times_dense(
    indptr: np.ndarray,
    indices: np.ndarray,
    values: np.ndarray,
    start: int,
    stop: int,
    weights: np.ndarray,
    out: np.ndarray,
) -> None:
    """Rows ``start:stop`` of the CSR matrix (``indptr, indices, values``) times ``weights``
    into ``out``: each row the weighted sum of the weight rows of its columns (contiguous
    floats, vectorised), four at a time, so the row is loaded and stored a quarter as often
    (1.6 -> 1.1 s for 16k users on the ``large`` shape; eight at a time gains nothing more)."""
    n = weights.shape[1]
    for r in range(start, stop):
        row = out[r - start]
        row[:] = 0.0
        p, end = indptr[r], indptr[r + 1]
        while p + 4 <= end:
            w0, w1 = weights[indices[p]], weights[indices[p + 1]]
            w2, w3 = weights[indices[p + 2]], weights[indices[p + 3]]
            v0, v1, v2, v3 = values[p], values[p + 1], values[p + 2], values[p + 3]
            for c in range(n):
                row[c] += v0 * w0[c] + v1 * w1[c] + v2 * w2[c] + v3 * w3[c]
            p += 4
        while p < end:
            w0, v0 = weights[indices[p]], values[p]
            for c in range(n):
                row[c] += v0 * w0[c]
            p += 1


def _compact_rules(rules: KernelRules | None, kept: np.ndarray) -> KernelRules:
    """``rules`` restricted to the ``kept`` item positions."""
    return KernelRules() if rules is None else rules.at(kept)


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
    # A copy, with blocked items -inf: the in-place selection below may then write it.
    work = np.array(scores, dtype=np.float32, order="C", copy=True)
    if blocked is not None:
        work[:, np.asarray(blocked, np.bool_)] = -np.inf
    ex = _csr(exclude, n_rows, n_items) if exclude is not None else None
    columns = np.arange(n_items)
    _select_in_place(work, k, ex, columns.astype(np.int32), columns, rules or KernelRules(),
                     out[0], out[1])  # fmt: skip
    return out


def _select_in_place(
    scores: np.ndarray,
    k: int,
    exclude: sp.csr_matrix | None,
    column: np.ndarray,
    positions: np.ndarray,
    rules: KernelRules,
    out_idx: np.ndarray,
    out_score: np.ndarray,
) -> None:
    """:func:`_select_rows` on a float32 C-contiguous block it may overwrite; ``column`` maps an
    item position of ``exclude`` to its column in ``scores`` (-1: not scored), ``positions`` a
    column back to its item position (what ``out_idx`` gets)."""
    n_rows = scores.shape[0]
    _select_rows(
        scores,
        k,
        np.asarray(exclude.indptr, np.int64)
        if exclude is not None
        else np.zeros(n_rows + 1, np.int64),
        np.asarray(exclude.indices, np.int32) if exclude is not None else _EMPTY_I,
        column,
        positions,
        np.ascontiguousarray(rules.boost, dtype=np.float32)
        if rules.boost is not None
        else _EMPTY_F,
        np.ascontiguousarray(rules.category, dtype=np.int32)
        if rules.category is not None and rules.max_per_category > 0
        else _EMPTY_I,
        int(rules.max_per_category),
        out_idx,
        out_score,
    )


@njit(cache=True, nogil=True)
def _prepare_row(
    row: np.ndarray,
    ex_idx: np.ndarray,
    ex_start: int,
    ex_stop: int,
    column: np.ndarray,
    boost: np.ndarray,
) -> None:
    """The row in place as the selection reads it: boosted, -inf where the user's excluded
    items are scored (``column`` maps an item position to its column, -1: not scored)."""
    if boost.shape[0] > 0:
        for j in range(row.shape[0]):  # contiguous floats, no branch: vectorises
            row[j] += boost[j]
    for p in range(ex_start, ex_stop):
        c = column[ex_idx[p]]
        if c >= 0:
            row[c] = -np.inf


@njit(cache=True, nogil=True)
def _group_maxima(row: np.ndarray, n_groups: int, maxima: np.ndarray) -> None:
    """Maximum of each group ``{j : j mod n_groups == g}`` of the row into ``maxima``: an
    element-wise max of consecutive ``n_groups``-long runs, which vectorises when the runs are
    whole slices (a loop bound ``min(n_groups, n_items - start)`` kept it scalar: 9 -> 2.3 us
    a row of 9,530 items)."""
    n_items = row.shape[0]
    maxima[:n_groups] = row[:n_groups]
    start = n_groups
    while start + n_groups <= n_items:
        run = row[start : start + n_groups]
        for g in range(n_groups):
            v, a = run[g], maxima[g]
            maxima[g] = v if v > a else a
        start += n_groups
    for g in range(n_items - start):
        v, a = row[start + g], maxima[g]
        maxima[g] = v if v > a else a


@njit(cache=True, nogil=True)
def _bound(maxima: np.ndarray, n_groups: int, m: int) -> float:
    """A score that at least ``m`` of the group maxima reach (so at least ``m`` items: each is a
    different item), as high as a few bisections find; -inf when fewer than ``m`` are finite."""
    lo, hi, finite = np.inf, -np.inf, 0
    for g in range(n_groups):
        v = maxima[g]
        if np.isfinite(v):
            finite += 1
            lo = min(lo, v)
            hi = max(hi, v)
    if finite < m:
        return -np.inf
    for _ in range(24):
        mid = float(np.float32(lo + (hi - lo) * 0.5))  # a float32 the scores can equal
        if mid <= lo or mid >= hi:
            break
        reach = 0
        for g in range(n_groups):
            reach += maxima[g] >= mid
        if reach < m:
            hi = mid
        else:
            lo = mid
            if reach <= m + (m >> 3):  # tight enough: ~m candidates to sort
                break
    return lo


@njit(cache=True, nogil=True)
def _best_m(
    row: np.ndarray, m: int, maxima: np.ndarray, groups: np.ndarray, keys: np.ndarray
) -> int:
    """The best ``m`` finite scores of one prepared row (:func:`_prepare_row`), best first, as
    sort keys in ``keys[:returned]`` (:func:`_key_item` reads the item back); returns how many
    (fewer than ``m`` only when the row has no more). ``maxima``, ``groups``: scratch, as long
    as the row.

    The row's items fall into 8m strided groups; a bound that at least m group maxima reach
    leaves ~m groups to look into and ~m items at or above it, which are sorted by one integer
    key: the score's order-preserving bits, descending, then the item position ascending.
    Groups and items are gathered without branches: a group is open about one time in 8, an
    item in it above the bound one time in 12, at random, so a branch there mispredicted often
    (with the vectorised maxima, the whole selection went from 17.5 to 8.4-11 us a row of 9,530
    items)."""
    n_items = row.shape[0]
    size = 0
    if m * 16 <= n_items:
        n_groups = 8 * m
        _group_maxima(row, n_groups, maxima)
        bound = _bound(maxima, n_groups, m)
        n_open = 0
        for g in range(n_groups):
            groups[n_open] = g
            n_open += not maxima[g] < bound  # a NaN maximum may hide finite items
        for i in range(n_open):
            for j in range(groups[i], n_items, n_groups):
                v = row[j]
                keys[size] = j
                size += (v >= bound) & (v > -np.inf) & (v < np.inf)
    else:
        for j in range(n_items):
            v = row[j]
            keys[size] = j
            size += (v > -np.inf) & (v < np.inf)
    bits = row.view(np.int32)
    for i in range(size):
        j = keys[i]
        b = bits[j]
        if b == np.int32(-2147483648):  # -0.0 ranks as 0.0
            b = np.int32(0)
        up = np.uint64(np.uint32(~b)) if b < 0 else np.uint64(np.uint32(b) | _SIGN)
        keys[i] = ((np.uint64(0xFFFFFFFF) - up) << np.uint64(32)) | j
    keys[:size].sort()
    return min(size, m)


@njit(cache=True, nogil=True, inline="always")
def _key_item(key: np.uint64) -> int:
    return int(key & np.uint64(0xFFFFFFFF))


@njit(cache=True, nogil=True)
def _select_rows(
    scores: np.ndarray,
    k: int,
    ex_ptr: np.ndarray,
    ex_idx: np.ndarray,
    column: np.ndarray,
    positions: np.ndarray,
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
    keys = np.empty(n_items, np.uint64)
    maxima = np.empty(n_items, np.float32)
    groups = np.empty(n_items, np.int64)
    for r in range(n_rows):
        for c in range(k):
            out_idx[r, c] = -1
            out_score[r, c] = -np.inf
        row = scores[r]
        _prepare_row(row, ex_idx, ex_ptr[r], ex_ptr[r + 1], column, boost)
        if not capped:
            size = _best_m(row, k, maxima, groups, keys)
            for c in range(size):
                item = _key_item(keys[c])
                out_idx[r, c] = positions[item]
                out_score[r, c] = row[item]
            continue
        # A category cap is a greedy walk down the sorted row: the first m items decide it
        # whenever the walk fills k from them, so m grows only when it does not.
        m = min(n_items, 2 * k)
        while True:
            size = _best_m(row, m, maxima, groups, keys)
            counts[:] = 0
            taken = 0
            for c in range(size):
                item = _key_item(keys[c])
                code = category[item]
                if code >= 0:
                    if counts[code] >= cap:
                        continue
                    counts[code] += 1
                out_idx[r, taken] = positions[item]
                out_score[r, taken] = row[item]
                taken += 1
                if taken == k:
                    break
            if taken == k or size < m or m >= n_items:
                break
            for c in range(taken):
                out_idx[r, c] = -1
                out_score[r, c] = -np.inf
            m = min(n_items, 4 * m)


@njit(cache=True, nogil=True)
def fill_lists(
    items: np.ndarray,
    scores: np.ndarray,
    source: np.ndarray,
    rows: np.ndarray,
    extra: np.ndarray,
    extra_scores: np.ndarray,
    extra_source: np.ndarray,
) -> None:
    """Top up lists in place: each ``rows[i]`` of ``items`` (users x k, -1 only at a list's
    end) gets the items of ``extra[i]`` it does not hold yet, in their order, until it is k
    long; with their ``extra_scores`` and the source ``extra_source[i]``. As
    :func:`models.policy.fill_to_k` on a long table."""
    k = items.shape[1]
    for i in range(rows.shape[0]):
        r = rows[i]
        n = 0
        while n < k and items[r, n] >= 0:
            n += 1
        for j in range(extra.shape[1]):
            if n == k:
                break
            item = extra[i, j]
            if item < 0:
                break
            listed = False
            for c in range(n):
                if items[r, c] == item:
                    listed = True
                    break
            if not listed:
                items[r, n] = item
                scores[r, n] = extra_scores[i, j]
                source[r, n] = extra_source[i]
                n += 1
