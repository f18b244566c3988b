"""How far any recommender can beat popularity on a synthetic preset: precision@10 of the
generator's own view probabilities (the Bayes-optimal ranking), beside global popularity, on
the nightly's evaluation window. A benchmark: printed, never asserted.

The generator (``pipelines/sources/synthetic.py``) draws each view from the user's latent taste
segment with probability ``segment_affinity`` (items weighted by their Zipf popularity within
the segment), else from the whole live catalog by popularity. Ranking every unseen live item by
that probability, knowing each user's true segment, maximises a user's expected hits in the
window; no model learned from the events can expect more. The window's truth is what the
nightly judges on (``holdout``: pairs first touched in the last 7 days before ``as_of``), and
popularity is the nightly's baseline (14 days, fitted on events before the window), so the
popularity row is the ``baseline`` of ``python -m bench.nightly``'s training.

    python -m bench.ceiling [--preset large] [--workdir /tmp/recs-bench]

Without a built warehouse in ``<workdir>/<preset>``, it first runs ``bench.nightly``'s
generate, extract, validate and features stages there (about 90 s on ``large``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import polars as pl

K = 10
HOLDOUT_DAYS = 7  # bench.nightly's window
RESAMPLES = 1000
SEGMENTS = ("warm", "cold")


def ceiling_lists(
    window_users: pl.DataFrame,
    seen: pl.DataFrame,
    items: pl.DataFrame,
    users: pl.DataFrame,
    affinity: float,
    k: int,
) -> pl.DataFrame:
    """Per window user, the ``k`` unseen items of ``items`` with the highest probability of the
    user's next view: ``affinity * [same segment] * pop / S_segment + (1 - affinity) * pop /
    S_all`` (``items``: ``item_id, _popularity, _segment``, the live catalog; ``users``:
    ``user_id, _segment``). Rows ``user_id, item_id, rank``."""
    pop = items["_popularity"].to_numpy()
    iseg = items["_segment"].to_numpy()
    ids = items["item_id"].to_list()
    segment_of = dict(zip(users["user_id"].to_list(), users["_segment"].to_list(), strict=True))
    seen_by = {
        u: set(g["item_id"].to_list())
        for (u,), g in seen.join(window_users, on="user_id", how="semi").group_by("user_id")
    }
    rows: list[tuple[str, str, int]] = []
    orders: dict[int, np.ndarray] = {}
    for user in window_users["user_id"].to_list():
        s = segment_of[user]
        if s not in orders:
            mine = iseg == s
            score = (1 - affinity) * pop / pop.sum() + affinity * mine * pop / pop[mine].sum()
            orders[s] = np.argsort(-score, kind="stable")
        skip = seen_by.get(user, set())
        top = [ids[j] for j in orders[s][: k + len(skip)] if ids[j] not in skip][:k]
        rows += [(user, item, rank) for rank, item in enumerate(top, 1)]
    return pl.DataFrame(rows, schema=["user_id", "item_id", "rank"], orient="row")


def main() -> None:
    from bench import nightly
    from models.base import TrainingData
    from models.baselines import PopularityParams, PopularityRecommender
    from models.evaluate import per_user_metrics
    from pipelines.sources.synthetic import PRESETS, catalogs
    from pipelines.stores import warehouse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="large", choices=["tiny", "demo", "large"])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/recs-bench"))
    args = parser.parse_args()
    root = args.workdir / args.preset
    if not (root / "warehouse.duckdb").exists():
        nightly.run([args.preset], args.workdir, ["generate", "extract", "validate", "features"])
    path = root / "warehouse.duckdb"
    inter, users, items, holdout = warehouse.read_tables(
        path, "eval_interactions", "eval_user_features", "eval_item_features", "holdout"
    )
    with warehouse.connect(path, read_only=True) as con:
        row = con.execute("select arg_max(window_start, rowid) from feature_runs").fetchone()
    assert row is not None
    start = row[0]
    who = holdout.select("user_id", "user_segment").unique().sort("user_id")
    window_users = who.join(users, on="user_id", how="left")
    seen = inter.select("user_id", "item_id")
    data = TrainingData(inter.filter(pl.col("positive")), users, items, start)
    popular = PopularityRecommender.fit(data, PopularityParams()).recommend(
        window_users, K, exclude=seen
    )
    params = PRESETS[args.preset]
    cat = catalogs(params)
    # Live in the window: released by its last day, withdrawn (if ever) after its first.
    first_day = params.days - HOLDOUT_DAYS
    live = cat.items.filter(
        (pl.col("release_day") < params.days) & (pl.col("_gone_day") > first_day)
    )
    best = ceiling_lists(
        window_users, seen, live, cat.users.select("user_id", "_segment"),
        params.segment_affinity, K,
    )  # fmt: skip
    precision = {
        name: per_user_metrics(lists, holdout, K).join(who, on="user_id")
        for name, lists in (("global popularity (14 days)", popular), ("the ceiling", best))
    }
    base = precision["global popularity (14 days)"]["precision"].to_numpy()
    rng = np.random.default_rng(0)
    picks = rng.integers(0, base.size, size=(RESAMPLES, base.size))
    print(
        f"\n## the ceiling on {args.preset!r}, window from {start:%Y-%m-%d} ({who.height} users)\n"
    )
    print("| candidate | warm P@10 (n) | cold P@10 (n) | all P@10 [95%] | x popularity [95%] |")
    print("|---|---|---|---|---|")
    for name, frame in precision.items():
        values = frame["precision"].to_numpy()
        by = {s: g["precision"].to_numpy() for (s,), g in frame.group_by("user_segment")}
        cells = [f"{by[s].mean():.4f} ({by[s].size})" if s in by else "-" for s in SEGMENTS]
        means = values[picks].mean(axis=1)
        ratios = means / base[picks].mean(axis=1)
        lo, hi = np.percentile(means, [2.5, 97.5])
        rlo, rhi = np.percentile(ratios, [2.5, 97.5])
        print(
            f"| {name} | {' | '.join(cells)} | {values.mean():.4f} [{lo:.4f}, {hi:.4f}] | "
            f"{values.mean() / base.mean():.2f}x [{rlo:.2f}, {rhi:.2f}] |"
        )


if __name__ == "__main__":
    main()
