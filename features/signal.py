"""What counts as signal: the interaction weights and positives of ``features/sql/
interactions.sql`` and the truth of ``holdout.sql``, as one frozen params model."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class SignalParams(BaseModel):
    """How events become training signal (logged whole with each model)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type_weights: dict[str, float] = Field(
        default_factory=lambda: {
            "view": 1.0, "click": 2.0, "add_to_cart": 4.0, "purchase": 8.0, "rating": 1.0,
        },
        description="weight of one event per type (types not listed weigh 1)",
    )  # fmt: skip
    min_rating: float = Field(
        4.0, description="a rating below this is no positive (on 1-5: 1-3 stars are not likes)"
    )
    half_life_days: float | None = Field(
        None, gt=0, description="an event's weight halves every this many days (None: no decay)"
    )
    max_repeats: int = Field(5, ge=1, description="latest events of one type per pair that count")

    def sql_params(self) -> dict[str, Any]:
        """The bound parameters the SQL files read."""
        return {
            "weight_types": list(self.type_weights),
            "weight_values": [float(v) for v in self.type_weights.values()],
            "min_rating": self.min_rating,
            "half_life_days": self.half_life_days or 0.0,
            "max_repeats": self.max_repeats,
        }
