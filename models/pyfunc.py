"""The MLflow pyfunc model: any MLflow client can load the champion and ask for top-K lists."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl
from mlflow.pyfunc.model import PythonModel

from models.lightfm_model import LightFMRecommender

ARTIFACT_KEY = "recommender"


class RecommenderModel(PythonModel):
    """Wraps :class:`LightFMRecommender`; input rows are users (``user_id`` plus optional
    attribute columns), output is one row per user x rank."""

    recommender: LightFMRecommender

    def load_context(self, context: Any) -> None:
        self.recommender = LightFMRecommender.load(Path(context.artifacts[ARTIFACT_KEY]))

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        k = int((params or {}).get("k", 10))
        users = pl.from_pandas(model_input.astype({"user_id": "string"}))
        return self.recommender.recommend(users, k).to_pandas()
