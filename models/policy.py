"""Pure decisions: whether a trained model is promoted, and how lists are blended. Functions of
metrics and frames only; the stages apply their verdicts."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from features.contracts import C


@dataclass(frozen=True)
class Decision:
    """The promotion verdict and its reason, in words."""

    promote: bool
    reason: str


def promotion_decision(metrics: dict[str, float], key: str, *, has_champion: bool) -> Decision:
    """Promote when the model beats the popularity baseline and (if any) the champion on
    ``key`` over the same evaluation users, and there were evaluation users at all.

    Args:
        metrics: ``model_<key>``, ``baseline_<key>``, ``champion_<key>`` (when there is a
            champion) and ``model_n_users``.
        key: the primary metric, e.g. ``precision_at_10``.
        has_champion: whether a champion exists to be beaten.
    """
    model = metrics[f"model_{key}"]
    if metrics.get("model_n_users", 0) <= 0:
        return Decision(False, "not promoted: no evaluation users")
    if not model > metrics[f"baseline_{key}"]:
        return Decision(False, "not promoted: did not beat the popularity baseline")
    if has_champion and not model > metrics[f"champion_{key}"]:
        return Decision(False, "not promoted: did not beat the champion")
    return Decision(True, "promoted")


def fill_to_k(primary: pl.DataFrame, fallback: pl.DataFrame, k: int) -> pl.DataFrame:
    """Per user, ``primary`` rows first, then ``fallback`` items not already listed; re-ranked
    1..k. One row per user_id x rank."""
    both = pl.concat([primary.with_columns(_o=pl.lit(0)), fallback.with_columns(_o=pl.lit(1))])
    return (
        both.sort(C.user_id, "_o", C.rank)
        .unique(subset=[C.user_id, C.item_id], keep="first", maintain_order=True)
        .with_columns(pl.int_range(1, pl.len() + 1).over(C.user_id).cast(pl.Int32).alias(C.rank))
        .filter(pl.col(C.rank) <= k)
        .drop("_o")
    )
