"""EASE (Steck 2019, "Embarrassingly Shallow Autoencoders"): an item-item linear model with a
closed form, ``B = I - P / diag(P)`` for ``P = (X'X + l2 I)^-1`` on the binary positives ``X``.

A strong recommender for users with history; it knows nothing of users without any (they are
not described, and the stage serves them otherwise). Its cost is one items x items inverse, so
it is skipped above ``max_items``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import polars as pl
import scipy.linalg
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field

from features.contracts import C
from features.matrices import pair_indices
from models.base import (
    TrainingData,
    allowed_mask,
    exclusion_matrix,
    kernel_rules,
    recommendation_frame,
    similar_items_frame,
)
from models.rules import ItemRules
from models.scoring import select_top_k, top_k

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
class EASERecommender:
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
        # In place where it can be: items^2 float64 twice at most (10k items: 1.6 GB, was 3.2).
        gram = (history.T @ history).toarray().astype(np.float64)
        gram[np.diag_indices_from(gram)] += params.l2
        inverse = scipy.linalg.inv(gram, overwrite_a=True, check_finite=False)
        del gram
        inverse /= -np.diag(inverse).copy()  # B = -P / diag(P), column by column
        np.fill_diagonal(inverse, 0.0)
        weights = inverse.astype(np.float32)
        del inverse
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
        index = pl.DataFrame({C.user_id: self.user_ids}).with_row_index("r")
        rows = users.select(C.user_id).join(index, on=C.user_id, how="left", maintain_order="left")
        picks = rows["r"].fill_null(0).to_numpy()
        known = rows["r"].is_not_null().to_numpy()
        out: sp.csr_matrix = sp.csr_matrix(sp.diags(known.astype(np.float32)) @ self.history[picks])
        return out  # unknown users: an empty row

    def recommend(
        self,
        users: pl.DataFrame,
        k: int,
        *,
        exclude: pl.DataFrame | None = None,
        allowed_items: pl.Series | None = None,
        rules: ItemRules | None = None,
        num_threads: int = 1,
        block: int = 2048,
    ) -> pl.DataFrame:
        """See :class:`models.base.Recommender`; ``source`` is ``ease``. Scored in user blocks
        (``block x items`` dense floats at a time; ``num_threads`` is unused: numpy's product)."""
        rows = self._rows(users)
        excluded = exclusion_matrix(exclude, users[C.user_id], self.item_ids)
        mask = allowed_mask(allowed_items, self.item_ids)
        blocked = None if mask is None else ~mask
        aligned = kernel_rules(rules, self.item_ids)
        parts_idx, parts_score = [], []
        for start in range(0, users.height, block):
            stop = min(start + block, users.height)
            # Sparse history x dense weights: the cost follows each user's positives.
            scores = np.asarray(rows[start:stop] @ self.weights, dtype=np.float32)
            ex = excluded[start:stop] if excluded is not None else None
            idx, best = select_top_k(scores, k, ex, blocked, aligned)
            parts_idx.append(idx)
            parts_score.append(best)
        width = min(k, self.item_ids.len())
        idx_all = np.vstack(parts_idx) if parts_idx else np.empty((0, width), np.int64)
        scores_all = np.vstack(parts_score) if parts_score else np.empty((0, width), np.float32)
        source = pl.Series(["ease"] * users.height, dtype=pl.String)
        return recommendation_frame(users[C.user_id], self.item_ids, idx_all, scores_all, source)

    def similar_items(
        self, k: int, *, allowed_items: pl.Series | None = None, num_threads: int = 1
    ) -> pl.DataFrame:
        """Per item, the items its column of weights ranks highest (never itself)."""
        n = self.item_ids.len()
        idx, scores = top_k(
            self.weights.T.copy(), np.eye(n, dtype=np.float32), k,
            exclude=sp.identity(n, dtype=np.int8, format="csr"),
            allowed=allowed_mask(allowed_items, self.item_ids), num_threads=num_threads,
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
            weights = a["weights"]
        return cls(
            EASEParams.model_validate(meta["params"]),
            pl.Series(C.item_id, meta["item_ids"], dtype=pl.String),
            weights,
            pl.Series(C.user_id, meta["user_ids"], dtype=pl.String),
            history,
        )
