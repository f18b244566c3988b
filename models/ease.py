"""EASE (Steck 2019, "Embarrassingly Shallow Autoencoders"): an item-item linear model with a
closed form, ``B = I - P / diag(P)`` for ``P = (X'X + l2 I)^-1`` on the binary positives ``X``.

A strong recommender for users with history; it knows nothing of users without any (they are
not described, and the stage serves them otherwise). Its cost is one items x items inverse, so
it is skipped above ``max_items``.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import polars as pl
import scipy.sparse as sp
from numba import njit
from pydantic import BaseModel, ConfigDict, Field
from scipy.linalg import lapack

from features.contracts import C
from features.matrices import pair_indices
from models.base import (
    Ranked,
    RecommendsByRank,
    TrainingData,
    allowed_mask,
    similar_items_frame,
)
from models.scoring import KernelRules, select_top_k, top_k_sparse

_ARRAYS = "ease.npz"
_META = "meta.json"


class EASEParams(BaseModel):
    """EASE hyperparameters."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    l2: float = Field(500.0, gt=0, description="L2 penalty on the item-item weights")
    max_items: int = Field(
        20_000, ge=1, description="catalogs larger than this skip EASE (memory: items^2 floats)"
    )


@dataclass(frozen=True)
class EASERecommender(RecommendsByRank):
    """A fitted EASE model: the item-item weights and each known user's positives."""

    kind: ClassVar[str] = "ease"

    params: EASEParams
    item_ids: pl.Series
    weights: np.ndarray  # items x items, zero diagonal
    user_ids: pl.Series
    history: sp.csr_matrix  # users x items, 1 for a positive

    @classmethod
    def fit(cls, data: TrainingData, params: Any = None) -> Self:
        """Closed form on the positives of ``data.interactions`` over the catalog's items.

        Raises:
            ValueError: the catalog has more items than ``params.max_items``.
        """
        params = params if isinstance(params, EASEParams) else EASEParams()
        items = data.items[C.item_id] if data.items.height else data.interactions[C.item_id]
        item_ids = items.unique().sort()
        if item_ids.len() > params.max_items:
            raise ValueError(
                f"EASE: {item_ids.len()} items, more than max_items {params.max_items}"
            )
        user_ids = data.interactions[C.user_id].unique().sort()
        coded = pair_indices(data.interactions.select(C.user_id, C.item_id), user_ids, item_ids)
        history = sp.csr_matrix(
            (np.ones(coded.height, np.float32), (coded["u"].to_numpy(), coded["i"].to_numpy())),
            shape=(user_ids.len(), item_ids.len()),
        )
        gram = cooccurrence(history, num_threads=os.cpu_count() or 1)
        gram[np.diag_indices_from(gram)] += np.float32(params.l2)
        weights = closed_form(gram)
        del gram
        return cls(params, item_ids.alias(C.item_id), weights, user_ids, history)

    def describes(self, users: pl.DataFrame) -> np.ndarray:
        """Users with positives in training."""
        return np.asarray(users[C.user_id].is_in(self.user_ids.implode()).to_numpy())

    def user_attributes(self) -> list[str]:
        return []

    def full_scores(self, users: pl.DataFrame) -> np.ndarray:
        """users x items (in :attr:`item_ids` order): every item's score (unknown users: 0)."""
        return np.asarray(self._rows(users) @ self.weights, dtype=np.float32)

    def _rows(self, users: pl.DataFrame) -> sp.csr_matrix:
        return self._rows_known(users)[0]

    def _rows_known(self, users: pl.DataFrame) -> tuple[sp.csr_matrix, np.ndarray]:
        """The users' history rows (unknown users: an empty row), and which users are known
        (:meth:`describes`)."""
        index = pl.DataFrame({C.user_id: self.user_ids}).with_row_index("r")
        rows = users.select(C.user_id).join(index, on=C.user_id, how="left", maintain_order="left")
        picks = rows["r"].fill_null(0).to_numpy()
        known = rows["r"].is_not_null().to_numpy()
        out: sp.csr_matrix = sp.csr_matrix(sp.diags(known.astype(np.float32)) @ self.history[picks])
        return out, known

    def rank(
        self,
        users: pl.DataFrame,
        k: int,
        *,
        exclude: sp.csr_matrix | None = None,
        allowed: np.ndarray | None = None,
        rules: KernelRules | None = None,
        num_threads: int = 1,
        block: int = 512,
    ) -> Ranked:
        """See :class:`models.base.Recommender`; ``source`` is ``ease``. Scored in user blocks
        on ``num_threads`` threads (:func:`models.scoring.top_k_sparse`; ``block x items``
        floats per thread)."""
        rows, known = self._rows_known(users)
        idx, scores = top_k_sparse(
            rows, self.weights, k, exclude=exclude, allowed=allowed, rules=rules, block=block,
            num_threads=num_threads,
        )  # fmt: skip
        return Ranked.of(idx, scores, "ease", known)

    def similar_items(
        self, k: int, *, allowed_items: pl.Series | None = None, num_threads: int = 1
    ) -> pl.DataFrame:
        """Per item, the items its column of weights ranks highest (never itself)."""
        n = self.item_ids.len()
        # Item i's scores are row i of the weights' transpose: selected as they are, no product.
        mask = allowed_mask(allowed_items, self.item_ids)
        idx, scores = select_top_k(
            np.ascontiguousarray(self.weights.T), k,
            sp.identity(n, dtype=np.int8, format="csr"), None if mask is None else ~mask,
        )  # fmt: skip
        return similar_items_frame(self.item_ids, idx, scores)

    def save(self, directory: Path) -> Path:
        """Write ``ease.npz`` (weights, history) and ``meta.json`` into ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        h = self.history
        np.savez_compressed(
            directory / _ARRAYS, weights=self.weights, data=h.data, indices=h.indices,
            indptr=h.indptr, shape=np.array(h.shape),
        )  # fmt: skip
        meta = {
            "kind": self.kind,
            "params": self.params.model_dump(),
            "item_ids": self.item_ids.to_list(),
            "user_ids": self.user_ids.to_list(),
        }
        (directory / _META).write_text(json.dumps(meta))
        return directory

    @classmethod
    def load(cls, directory: Path) -> Self:
        """Read a model written by :meth:`save`."""
        meta = json.loads((directory / _META).read_text())
        with np.load(directory / _ARRAYS) as a:
            history = sp.csr_matrix((a["data"], a["indices"], a["indptr"]), shape=tuple(a["shape"]))
            weights = np.ascontiguousarray(a["weights"], dtype=np.float32)
        return cls(
            EASEParams.model_validate(meta["params"]),
            pl.Series(C.item_id, meta["item_ids"], dtype=pl.String),
            weights,
            pl.Series(C.user_id, meta["user_ids"], dtype=pl.String),
            history,
        )


def closed_form(gram: np.ndarray) -> np.ndarray:
    """EASE's weights ``B = -P / diag(P)`` (zero diagonal) for ``P = gram^-1``, ``gram`` a
    symmetric positive definite float32 C-order matrix, overwritten: the weights are returned
    in its memory (C order: scoring adds up rows).

    float32 Cholesky (``spotrf`` + ``spotri``), then the weights: 5.8 s on 10k items here
    (timed when the weights went to a second array), against 8.2 s for a float32 LU inverse
    and 10.6 s for the float64 one used before. On the
    ``large`` shape, float32 and float64 weights rank 99.994% of top-100 slots the same (the
    rest are near-ties swapped).

    Raises:
        ValueError: ``gram`` is not positive definite.
    """
    # The transpose of a C-order symmetric matrix is itself in Fortran order: LAPACK works on
    # it in place, no copy. Its lower triangle (Fortran) is the upper one of ``factor.T``.
    factor, info = lapack.spotrf(gram.T, lower=True, overwrite_a=True, clean=False)
    if info == 0:
        factor, info = lapack.spotri(factor, lower=True, overwrite_c=True)
    if info != 0:
        raise ValueError(f"EASE: the regularised Gram matrix is not positive definite ({info})")
    weights: np.ndarray = factor.T  # C order, in the Gram matrix's memory: no second items^2
    _weights_in_place(weights)
    return weights


@njit(cache=True, nogil=True)
def _weights_in_place(p: np.ndarray) -> None:
    """The symmetric ``P`` held in ``p``'s upper triangle (the lower one is scratch) becomes
    ``-P[i, j] / P[j, j]`` everywhere off the diagonal, 0 on it; in 64 x 64 tiles of the upper
    triangle, each also writing its mirror tile."""
    n = p.shape[0]
    diagonal = np.empty(n, np.float32)
    for j in range(n):
        diagonal[j] = p[j, j]
    for bi in range(0, n, 64):
        for bj in range(bi, n, 64):
            for i in range(bi, min(bi + 64, n)):
                for j in range(max(bj, i + 1), min(bj + 64, n)):
                    v = p[i, j]
                    p[i, j] = -v / diagonal[j]
                    p[j, i] = -v / diagonal[i]
    for j in range(n):
        p[j, j] = 0.0


def cooccurrence(history: sp.csr_matrix, num_threads: int = 1) -> np.ndarray:
    """``history.T @ history`` as a dense float32 items x items matrix, for a binary history:
    each user's item pairs counted once (exact: counts are integers below 2^24). SciPy's sparse
    product built a sparse result of up to items^2 entries first (5 s on the ``large`` shape).
    The rows are cut in bands, one thread writing each."""
    n = history.shape[1]
    out = np.zeros((n, n), np.float32)
    indptr = np.asarray(history.indptr, np.int64)
    indices = np.asarray(history.indices, np.int32)
    bands = np.linspace(0, n, 4 * max(num_threads, 1) + 1).astype(np.int64)

    def band(b: int) -> None:
        _count_pairs(indptr, indices, int(bands[b]), int(bands[b + 1]), out)

    with ThreadPoolExecutor(max(num_threads, 1)) as pool:
        list(pool.map(band, range(bands.size - 1)))
    return out


@njit(cache=True, nogil=True)
def _count_pairs(
    indptr: np.ndarray, indices: np.ndarray, lo: int, hi: int, out: np.ndarray
) -> None:
    """Adds 1 to ``out[i, j]`` for every row's pair of columns (i, j) with ``lo <= i < hi``."""
    for r in range(indptr.shape[0] - 1):
        for p in range(indptr[r], indptr[r + 1]):
            i = indices[p]
            if i < lo or i >= hi:
                continue
            row = out[i]
            for q in range(indptr[r], indptr[r + 1]):
                row[indices[q]] += 1.0
