"""The MLflow pyfunc model: any MLflow client can load the champion and ask for top-K lists."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl
from mlflow.pyfunc.model import PythonModel

from models.base import Recommender
from models.baselines import PopularityRecommender
from models.ease import EASERecommender
from models.lightfm_model import LightFMRecommender

ARTIFACT_KEY = "recommender"

KINDS: dict[str, type[LightFMRecommender] | type[PopularityRecommender] | type[EASERecommender]] = {
    LightFMRecommender.kind: LightFMRecommender,
    PopularityRecommender.kind: PopularityRecommender,
    EASERecommender.kind: EASERecommender,
}
"""Every recommender that can be saved, logged and served, by its ``kind``."""


def load_recommender(directory: Path) -> Recommender:
    """Read any recommender written by its ``save`` (the kind is in its ``meta.json``).

    Raises:
        ValueError: naming the directory and the kind when it is not one of :data:`KINDS`.
    """
    kind = json.loads((directory / "meta.json").read_text()).get("kind", LightFMRecommender.kind)
    if kind not in KINDS:
        raise ValueError(
            f"{directory}: unknown recommender kind {kind!r}; expected {sorted(KINDS)}"
        )
    return KINDS[kind].load(directory)


class RecommenderModel(PythonModel):
    """Wraps any :class:`models.base.Recommender`; input rows are users (``user_id`` plus
    optional attribute columns), output is one row per user x rank."""

    recommender: Recommender

    def load_context(self, context: Any) -> None:
        self.recommender = load_recommender(Path(context.artifacts[ARTIFACT_KEY]))

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        k = int((params or {}).get("k", 10))
        users = pl.from_pandas(model_input.astype({"user_id": "string"}))
        return self.recommender.recommend(users, k).to_pandas()
