"""What every recommender offers, and the shared step from scores to a recommendation table."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Self

import numpy as np
import polars as pl
import scipy.sparse as sp

from features.contracts import C
from features.matrices import pair_indices
from models.scoring import KernelRules

if TYPE_CHECKING:
    from models.rules import ItemRules

RECS_SCHEMA = {
    C.user_id: pl.String,
    C.rank: pl.Int32,
    C.item_id: pl.String,
    C.score: pl.Float64,
    C.source: pl.String,
}


@dataclass(frozen=True)
class TrainingData:
    """What a recommender is fitted on: the feature tables of one ``as_of``.

    Attributes:
        interactions: one row per user_id x item_id before ``as_of`` (``weight``, ``last_ts``).
        users: one row per user_id with attributes (features/sql/user_features.sql).
        items: one row per item_id with attributes (features/sql/item_features.sql).
        as_of: the fit's "now"; nothing at or after it is in the tables.
    """

    interactions: pl.DataFrame
    users: pl.DataFrame
    items: pl.DataFrame
    as_of: datetime | None = None


class Recommender(Protocol):
    """A model that ranks items for users (LightFM, popularity, ...).

    Every implementation passes the shared contract in ``tests/unit/test_recommender_contract.py``
    and is saved with its ``kind`` so :func:`models.pyfunc.load_recommender` can read it back.
    """

    kind: ClassVar[str]

    @property
    def item_ids(self) -> pl.Series:
        """The items it can recommend, in its own order."""
        ...

    @classmethod
    def fit(cls, data: TrainingData, params: Any = None) -> Self:
        """Fit on ``data``; ``params`` is the model's own frozen params model (None: defaults)."""
        ...

    def describes(self, users: pl.DataFrame) -> np.ndarray:
        """Per user: whether the model can rank for them (history or known attributes)."""
        ...

    def user_attributes(self) -> list[str]:
        """The user attribute columns the model reads (they make its MLflow signature)."""
        ...

    def similar_items(
        self, k: int, *, allowed_items: pl.Series | None = None, num_threads: int = 1
    ) -> pl.DataFrame:
        """One row per item_id x rank (1..k): ``item_id, rank, similar_item_id, score``."""
        ...

    def save(self, directory: Path) -> Path:
        """Write the model into ``directory`` (created); returns it."""
        ...

    @classmethod
    def load(cls, directory: Path) -> Self:
        """Read a model written by :meth:`save`."""
        ...

    def rank(
        self,
        users: pl.DataFrame,
        k: int,
        *,
        exclude: sp.csr_matrix | None = None,
        allowed: np.ndarray | None = None,
        rules: KernelRules | None = None,
        num_threads: int = 1,
    ) -> Ranked:
        """:meth:`recommend` as positions in :attr:`item_ids`, with everything already aligned to
        them: ``exclude`` users x items (non-zero: never recommended), ``allowed`` a mask over
        the items, ``rules`` in their order. The score stage calls it on integer codes, so no
        id is joined or gathered per chunk."""
        ...

    def recommend(
        self,
        users: pl.DataFrame,
        k: int,
        *,
        exclude: pl.DataFrame | None = None,
        allowed_items: pl.Series | None = None,
        rules: ItemRules | None = None,
        num_threads: int = 1,
    ) -> pl.DataFrame:
        """One row per user_id x rank (1..k): ``user_id, rank, item_id, score, source``
        (:meth:`rank` on the pairs, items and rules aligned: :class:`RecommendsByRank`).

        Args:
            users: one row per user to score, ``user_id`` plus attribute columns.
            k: recommendations per user.
            exclude: (user_id, item_id) pairs never to recommend (already seen).
            allowed_items: only these items may be recommended (e.g. available ones).
            rules: score boosts and a per-category cap (:mod:`models.rules`).
            num_threads: scoring threads.
        """
        ...


@dataclass(frozen=True)
class Ranked:
    """A recommender's lists as positions (what :meth:`Recommender.rank` returns).

    Attributes:
        items: users x k positions in the recommender's ``item_ids``, best first (-1: an empty
            slot, only at the end of a list).
        scores: users x k, float32 from the kernels or float64 (-inf in empty slots).
        source: per user, a code into ``sources`` (the rows' ``source``).
        sources: the source names.
        described: per user, whether the recommender knows anything about them (None: all).
    """

    items: np.ndarray
    scores: np.ndarray
    source: np.ndarray
    sources: tuple[str, ...]
    described: np.ndarray | None = None

    @classmethod
    def of(
        cls, items: np.ndarray, scores: np.ndarray, source: str, described: np.ndarray | None = None
    ) -> Ranked:
        """Lists whose users all share one source."""
        return cls(items, scores, np.zeros(items.shape[0], np.int8), (source,), described)

    def frame(self, user_ids: pl.Series, item_ids: pl.Series) -> pl.DataFrame:
        """The long table (:func:`recommendation_frame`)."""
        names = pl.Series(self.sources, dtype=pl.String)
        return recommendation_frame(
            user_ids, item_ids, self.items, self.scores, names.gather(self.source)
        )


class Ranks(Protocol):
    """What :class:`RecommendsByRank` and the score stage need: :meth:`Recommender.rank`."""

    @property
    def item_ids(self) -> pl.Series: ...

    def rank(
        self,
        users: pl.DataFrame,
        k: int,
        *,
        exclude: sp.csr_matrix | None = None,
        allowed: np.ndarray | None = None,
        rules: KernelRules | None = None,
        num_threads: int = 1,
    ) -> Ranked: ...


class RecommendsByRank:
    """:meth:`Recommender.recommend` from the class's :meth:`Recommender.rank`, written once:
    the pairs, the allowed items and the rules aligned to its items, the positions turned back
    into ids."""

    def recommend(
        self: Ranks,
        users: pl.DataFrame,
        k: int,
        *,
        exclude: pl.DataFrame | None = None,
        allowed_items: pl.Series | None = None,
        rules: ItemRules | None = None,
        num_threads: int = 1,
    ) -> pl.DataFrame:
        """See :class:`Recommender` (and the class's ``rank``)."""
        item_ids = self.item_ids
        ranked = self.rank(
            users, k, exclude=exclusion_matrix(exclude, users[C.user_id], item_ids),
            allowed=allowed_mask(allowed_items, item_ids), rules=kernel_rules(rules, item_ids),
            num_threads=num_threads,
        )  # fmt: skip
        return ranked.frame(users[C.user_id], item_ids)


def positions(ids: pl.Series, among: pl.Series) -> np.ndarray:
    """Each of ``ids``' position in ``among`` (int64; -1: not there)."""
    index = pl.DataFrame({"_id": among}).with_row_index("_p")
    found = pl.DataFrame({"_id": ids}).join(index, on="_id", how="left", maintain_order="left")
    return found["_p"].cast(pl.Int64).fill_null(-1).to_numpy()


def remap_columns(matrix: sp.csr_matrix, column: np.ndarray, n_cols: int) -> sp.csr_matrix:
    """``matrix`` (CSR) with its column j moved to ``column[j]`` (-1: dropped), ``n_cols``
    wide; rows stay as they are."""
    moved = column[matrix.indices]
    keep = moved >= 0
    if keep.all():
        return sp.csr_matrix((matrix.data, moved, matrix.indptr), shape=(matrix.shape[0], n_cols))
    kept_before = np.concatenate([[0], np.cumsum(keep)])
    return sp.csr_matrix(
        (matrix.data[keep], moved[keep], kept_before[matrix.indptr]),
        shape=(matrix.shape[0], n_cols),
    )


def exclusion_matrix(
    exclude: pl.DataFrame | None, user_ids: pl.Series, item_ids: pl.Series
) -> sp.csr_matrix | None:
    """users x items matrix with 1 for each pair to exclude (pairs with unknown ids ignored)."""
    if exclude is None:
        return None
    # Duplicate pairs need no unique(): the matrix sums them, and any non-zero excludes.
    coded = pair_indices(exclude.select(C.user_id, C.item_id), user_ids, item_ids)
    u, i = coded["u"].to_numpy(), coded["i"].to_numpy()
    return sp.csr_matrix((np.ones(u.size, np.int8), (u, i)), shape=(user_ids.len(), item_ids.len()))


def kernel_rules(rules: ItemRules | None, item_ids: pl.Series) -> KernelRules | None:
    """``rules`` in the order of ``item_ids`` (None: no rules)."""
    return None if rules is None else rules.aligned(item_ids)


def allowed_mask(allowed_items: pl.Series | None, item_ids: pl.Series) -> np.ndarray | None:
    """Boolean mask over ``item_ids``: True where the item may be recommended."""
    if allowed_items is None:
        return None
    return item_ids.is_in(allowed_items.implode()).to_numpy()


def recommendation_frame(
    user_ids: pl.Series, item_ids: pl.Series, idx: np.ndarray, scores: np.ndarray, source: pl.Series
) -> pl.DataFrame:
    """Long table from the (users x k) index and score arrays of :func:`models.scoring.top_k`;
    empty slots (index -1) are dropped."""
    n_users, k = idx.shape
    flat = idx.reshape(-1)
    keep = flat >= 0
    rows = np.repeat(np.arange(n_users), k)[keep]
    ranks = np.tile(np.arange(1, k + 1, dtype=np.int32), n_users)[keep]
    return pl.DataFrame(
        {
            C.user_id: user_ids.gather(rows),
            C.rank: ranks,
            C.item_id: item_ids.gather(flat[keep]),
            C.score: scores.reshape(-1)[keep].astype(np.float64),
            C.source: source.gather(rows),
        },
        schema=RECS_SCHEMA,
    )


def similar_items_frame(item_ids: pl.Series, idx: np.ndarray, scores: np.ndarray) -> pl.DataFrame:
    """``similar_items`` rows (``item_id, rank, similar_item_id, score``) from the (items x k)
    arrays of :func:`models.scoring.top_k` run with the items as its "users"."""
    source = pl.Series([""] * item_ids.len(), dtype=pl.String)
    return as_similar_items(recommendation_frame(item_ids, item_ids, idx, scores, source))


def as_similar_items(recs: pl.DataFrame) -> pl.DataFrame:
    """A recommendation frame whose "users" are items, as ``similar_items`` rows."""
    return recs.select(
        pl.col(C.user_id).alias(C.item_id),
        C.rank,
        pl.col(C.item_id).alias("similar_item_id"),
        C.score,
    )
