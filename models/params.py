"""Hyperparameters: frozen pydantic models, logged whole to MLflow."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class LightFMParams(BaseModel):
    """LightFM hybrid model hyperparameters (see ``lightfm.LightFM``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    no_components: int = Field(48, ge=1)
    loss: Literal["warp", "bpr", "warp-kos", "logistic"] = "warp"
    learning_rate: float = Field(0.05, gt=0)
    item_alpha: float = Field(1e-6, ge=0)
    user_alpha: float = Field(1e-6, ge=0)
    max_sampled: int = Field(10, ge=1)
    epochs: int = Field(20, ge=1, description="epochs (the most, with early stopping)")
    patience: int | None = Field(
        5, ge=1, description="early stopping: stop after this many epochs without a better "
        "validation metric (None: train all epochs)",
    )  # fmt: skip
    random_state: int = 42
    num_threads: int = Field(1, ge=1, description="More than 1 is not deterministic")
