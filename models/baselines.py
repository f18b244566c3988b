"""The popularity baseline every model must beat before it is promoted."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from features.contracts import C
from models.base import allowed_mask, exclusion_matrix, recommendation_frame
from models.scoring import top_k

_FILE = "popularity.parquet"


@dataclass(frozen=True)
class PopularityRecommender:
    """Ranks items by the number of distinct users who interacted with them in training."""

    item_ids: pl.Series
    item_scores: np.ndarray

    def save(self, directory: Path) -> Path:
        """Write ``popularity.parquet`` (item_id, score) into ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        pl.DataFrame({C.item_id: self.item_ids, C.score: self.item_scores}).write_parquet(
            directory / _FILE
        )
        return directory

    @classmethod
    def load(cls, directory: Path) -> PopularityRecommender:
        """Read a baseline written by :meth:`save`."""
        frame = pl.read_parquet(directory / _FILE)
        return cls(frame[C.item_id], frame[C.score].to_numpy())

    @classmethod
    def fit(cls, interactions: pl.DataFrame) -> PopularityRecommender:
        """From one row per user_id x item_id (features/sql/interactions.sql)."""
        counts = interactions.group_by(C.item_id).agg(pl.len().alias("n")).sort(C.item_id)
        return cls(counts[C.item_id], counts["n"].to_numpy().astype(np.float32))

    def recommend(
        self,
        users: pl.DataFrame,
        k: int,
        *,
        exclude: pl.DataFrame | None = None,
        allowed_items: pl.Series | None = None,
        num_threads: int = 1,
    ) -> pl.DataFrame:
        """See :class:`models.base.Recommender`; ``source`` is ``popular``."""
        ones = np.ones((users.height, 1), np.float32)
        idx, scores = top_k(
            ones,
            self.item_scores[:, None],
            k,
            exclude=exclusion_matrix(exclude, users[C.user_id], self.item_ids),
            allowed=allowed_mask(allowed_items, self.item_ids),
            num_threads=num_threads,
        )
        source = pl.Series(["popular"] * users.height, dtype=pl.String)
        return recommendation_frame(users[C.user_id], self.item_ids, idx, scores, source)
