"""Pure decisions: whether a trained model is promoted, and how lists are blended. Functions of
metrics and frames only; the stages apply their verdicts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from features.contracts import C
from models.evaluate import series_mean


class GateParams(BaseModel):
    """When a challenger may replace the champion (logged with every decision)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    margin: float = Field(
        0.0, ge=0, description="the mean per-user gain in precision@k must exceed this"
    )
    min_users: int = Field(30, ge=1, description="evaluation users needed to decide at all")
    max_segment_loss: float = Field(
        0.02, ge=0, description="no segment (warm, cold) may lose more precision@k than this"
    )
    n_resamples: int = Field(1000, ge=100, description="paired bootstrap resamples")
    seed: int = 0


@dataclass(frozen=True)
class Interval:
    """A mean difference and its two-sided 95% bootstrap interval."""

    mean: float
    low: float
    high: float


def paired_bootstrap(diffs: np.ndarray, n_resamples: int, seed: int) -> Interval:
    """Mean of per-user differences and its 95% percentile interval, resampling users."""
    if diffs.size == 0:
        return Interval(0.0, 0.0, 0.0)
    rng = np.random.default_rng(seed)
    # int32 draws are the same numbers as int64 ones; alone, they draw in half the time and
    # gather faster (a training on ``large`` calls this ~130 times, over up to 43k users).
    picks = rng.integers(0, diffs.size, size=(n_resamples, diffs.size), dtype=np.int32)
    means = diffs[picks].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return Interval(float(diffs.mean()), float(low), float(high))


@dataclass(frozen=True)
class Decision:
    """The promotion verdict, with every reason in words."""

    promote: bool
    reasons: list[str]

    @property
    def reason(self) -> str:
        return ("promoted: " if self.promote else "not promoted: ") + "; ".join(self.reasons)


def promotion_decision(
    per_user: pl.DataFrame, challenger: str, references: list[str], params: GateParams
) -> Decision:
    """Whether ``challenger`` beats every reference (the champion, the popularity baselines) on
    per-user precision@k over the same evaluation users.

    Args:
        per_user: one row per candidate x user: ``candidate, user_id, user_segment,
            precision`` (every candidate scored on the same users).
        challenger: the candidate that may be promoted.
        references: the candidates it must beat.
        params: margin, minimum users, segment loss and bootstrap settings.

    A reference is beaten when the mean per-user gain exceeds ``margin`` and its paired
    bootstrap 95% interval lies above zero, and no segment loses more than
    ``max_segment_loss``.
    """
    mine = per_user.filter(pl.col("candidate") == challenger).sort(C.user_id)
    n = mine.height
    if n < params.min_users:
        return Decision(False, [f"{n} evaluation users, fewer than the {params.min_users} needed"])
    reasons, ok = [], True
    for ref in references:
        theirs = per_user.filter(pl.col("candidate") == ref).sort(C.user_id)
        if theirs[C.user_id].to_list() != mine[C.user_id].to_list():
            raise ValueError(f"candidates {challenger!r} and {ref!r} were scored on other users")
        diffs = mine["precision"].to_numpy() - theirs["precision"].to_numpy()
        ci = paired_bootstrap(diffs, params.n_resamples, params.seed)
        text = f"vs {ref}: {ci.mean:+.4f} [{ci.low:+.4f}, {ci.high:+.4f}]"
        if ci.mean <= params.margin or ci.low <= 0:
            ok = False
            reasons.append(text + " (not a win outside the interval)")
        else:
            reasons.append(text)
        joined = mine.with_columns(diff=pl.Series(diffs))
        for (segment,), rows in joined.group_by("user_segment", maintain_order=True):
            loss = -series_mean(rows["diff"])
            if loss > params.max_segment_loss:
                ok = False
                reasons.append(
                    f"segment {segment} loses {loss:.4f} to {ref} "
                    f"(more than {params.max_segment_loss})"
                )
    return Decision(ok, reasons)


SEGMENTS = ("warm", "cold")
"""User segments of the evaluation window: history before it, or attributes only."""


def segment_choice(
    per_user: pl.DataFrame, candidates: list[str], params: GateParams
) -> dict[str, str]:
    """Per user segment, what serves it: the first candidate (the default: global popularity)
    unless another has a better mean precision@k over the segment's users *and* a paired
    bootstrap 95% interval of its gain over the default above zero (noise does not move a
    segment). Among such winners the best mean wins, ties to the one listed first. A segment
    with no users keeps the model when there is one, else the default."""
    choice = {}
    default = candidates[0]
    for segment in SEGMENTS:
        rows = per_user.filter(pl.col("user_segment") == segment)
        if rows.height == 0:
            choice[segment] = "model" if "model" in candidates else default
            continue
        base = rows.filter(pl.col("candidate") == default).sort(C.user_id)["precision"].to_numpy()
        best, best_mean = default, float(base.mean())
        for c in candidates[1:]:
            mine = rows.filter(pl.col("candidate") == c).sort(C.user_id)["precision"].to_numpy()
            ci = paired_bootstrap(mine - base, params.n_resamples, params.seed)
            if ci.low > 0 and ci.mean + float(base.mean()) > best_mean + 1e-12:
                best, best_mean = c, ci.mean + float(base.mean())
        choice[segment] = best
    return choice


def fill_to_k(primary: pl.DataFrame, fallback: pl.DataFrame, k: int) -> pl.DataFrame:
    """Per user, ``primary`` rows first, then ``fallback`` items not already listed; re-ranked
    1..k. One row per user_id x rank, sorted by user and rank.

    ``primary`` holds distinct items per user ranked from 1, as every recommender's lists do;
    users with k of them already are passed through, and only the others are merged with
    ``fallback`` (on ``large``, merging everyone's 100-long lists with the popular ones was
    the training's peak: two 4.3M-row tables concatenated, sorted and de-duplicated)."""
    lengths = primary.group_by(C.user_id).agg(n=pl.len())
    full = lengths.filter(pl.col("n") >= k).select(C.user_id)
    if full.height == 0:
        return _merge(primary, fallback, k)
    done = primary.join(full, on=C.user_id, how="semi").filter(pl.col(C.rank) <= k)
    rest = _merge(
        primary.join(full, on=C.user_id, how="anti"),
        fallback.join(full, on=C.user_id, how="anti"),
        k,
    )
    return pl.concat([done, rest.select(done.columns)]).sort(C.user_id, C.rank)


def _merge(primary: pl.DataFrame, fallback: pl.DataFrame, k: int) -> pl.DataFrame:
    both = pl.concat([primary.with_columns(_o=pl.lit(0)), fallback.with_columns(_o=pl.lit(1))])
    return (
        both.sort(C.user_id, "_o", C.rank)
        .unique(subset=[C.user_id, C.item_id], keep="first", maintain_order=True)
        .with_columns(pl.int_range(1, pl.len() + 1).over(C.user_id).cast(pl.Int32).alias(C.rank))
        .filter(pl.col(C.rank) <= k)
        .drop("_o")
    )
