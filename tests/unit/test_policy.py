"""The pure policies: the promotion gate and the per-segment choice, on hand-written tables."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from models.policy import GateParams, paired_bootstrap, promotion_decision, segment_choice

GATE = GateParams(min_users=4, max_segment_loss=0.05, n_resamples=2000)


def _table(rows: dict[str, list[float]], segments: list[str]) -> pl.DataFrame:
    """One row per candidate x user; users u0.. with the given segments."""
    return pl.concat(
        pl.DataFrame(
            {
                "candidate": [name] * len(values),
                "user_id": [f"u{i}" for i in range(len(values))],
                "user_segment": segments,
                "precision": values,
            }
        )
        for name, values in rows.items()
    )


def test_bootstrap_interval_of_a_constant_gain_is_that_gain() -> None:
    ci = paired_bootstrap(np.full(10, 0.1), 500, seed=0)
    assert (ci.mean, ci.low, ci.high) == pytest.approx((0.1, 0.1, 0.1))


def test_a_clear_win_on_every_user_is_promoted() -> None:
    table = _table(
        {"model": [0.3, 0.4, 0.3, 0.5, 0.4, 0.3], "baseline": [0.1, 0.2, 0.1, 0.2, 0.2, 0.1]},
        ["warm", "warm", "warm", "cold", "cold", "cold"],
    )
    decision = promotion_decision(table, "model", ["baseline"], GATE)
    assert decision.promote, decision.reasons


def test_bootstrap_resamples_users_with_the_seeded_draws() -> None:
    # The interval is the percentiles of means over users drawn with replacement by the seeded
    # generator (int64 draws of the same generator: the same users).
    diffs = np.random.default_rng(5).integers(-3, 4, 200) / 10
    picks = np.random.default_rng(7).integers(0, 200, size=(300, 200))
    low, high = np.percentile(diffs[picks].mean(axis=1), [2.5, 97.5])
    ci = paired_bootstrap(diffs, 300, seed=7)
    assert (ci.mean, ci.low, ci.high) == (diffs.mean(), low, high)


def test_a_win_inside_the_bootstrap_interval_is_refused() -> None:
    # Mean gain +0.0333 but driven by one user: the interval reaches zero.
    table = _table(
        {"model": [0.5, 0.0, 0.1, 0.1, 0.0, 0.1], "baseline": [0.1, 0.1, 0.1, 0.1, 0.1, 0.1]},
        ["warm"] * 6,
    )
    decision = promotion_decision(table, "model", ["baseline"], GATE)
    assert not decision.promote
    assert "vs baseline: +0.0333" in decision.reason
    assert "not a win outside the interval" in decision.reason


def test_a_segment_that_loses_too_much_blocks_promotion() -> None:
    # A big, consistent gain on warm users, a consistent 0.1 loss on cold ones.
    table = _table(
        {
            "model": [0.9, 0.9, 0.9, 0.9, 0.0, 0.0],
            "baseline": [0.1, 0.1, 0.1, 0.1, 0.1, 0.1],
        },
        ["warm", "warm", "warm", "warm", "cold", "cold"],
    )
    decision = promotion_decision(table, "model", ["baseline"], GATE)
    assert not decision.promote
    assert "segment cold loses 0.1000 to baseline" in decision.reason


def test_too_few_users_decide_nothing() -> None:
    table = _table({"model": [1.0, 1.0], "baseline": [0.0, 0.0]}, ["warm", "cold"])
    decision = promotion_decision(table, "model", ["baseline"], GATE)
    assert not decision.promote
    assert decision.reasons == ["2 evaluation users, fewer than the 4 needed"]


def test_each_segment_goes_to_its_best_candidate_ties_to_the_first() -> None:
    table = _table(
        {
            "baseline": [0.1, 0.1, 0.3, 0.3],
            "segment:gender": [0.1, 0.1, 0.4, 0.2],  # cold mean 0.3: a tie with the baseline
            "model": [0.3, 0.2, 0.1, 0.1],
        },
        ["warm", "warm", "cold", "cold"],
    )
    assert segment_choice(table, ["baseline", "segment:gender", "model"], GATE) == {
        "warm": "model",
        "cold": "baseline",
    }


def test_a_segment_without_users_keeps_the_model() -> None:
    table = _table({"baseline": [0.2], "model": [0.1]}, ["warm"])
    assert segment_choice(table, ["baseline", "model"], GATE) == {
        "warm": "baseline",
        "cold": "model",
    }
    assert segment_choice(table, ["baseline"], GATE) == {"warm": "baseline", "cold": "baseline"}


def test_a_noisy_segment_win_keeps_the_default() -> None:
    # segment:x has the better mean on warm users (0.15 vs 0.10), carried by one user.
    table = _table(
        {"baseline": [0.1, 0.1, 0.1, 0.1], "segment:x": [0.5, 0.0, 0.0, 0.1]}, ["warm"] * 4
    )
    assert segment_choice(table, ["baseline", "segment:x"], GATE)["warm"] == "baseline"
