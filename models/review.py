"""What a reviewer compares before approving a night's model: ranking metrics at several k,
beyond-accuracy metrics, per segment, for the model, the baselines and the champion on the same
window users; and the model card that says it in words. Pure functions of frames.

Definitions (binary relevance: an item the user liked in the evaluation window):

- ``precision@k``, ``recall@k``, ``ndcg@k``: as in :mod:`models.evaluate`;
- ``map@k``: mean over users of average precision at k (the mean of precision@i over the ranks
  i <= k that hit, divided by min(k, the user's relevant items));
- ``hit_rate@k``: share of users with at least one hit in the top k;
- ``coverage@k``: distinct items recommended in anyone's top k / catalog items;
- ``popularity@k``: mean popularity (share of training users who touched the item) of the
  recommended items; ``popularity_ratio@k`` divides it by the catalog's mean (1: no bias toward
  popular items, 10: ten times the catalog's average);
- ``novelty@k``: mean of -log2(popularity) of the recommended items (higher: less known items);
- ``diversity@k`` (intra-list): mean over lists of the share of item pairs of different
  categories (when the items have one).

Segments: ``warm`` / ``cold`` users (history before the window or none), ``light`` / ``heavy``
users (at most / more than the median number of training interactions among warm users), and
``new_items``: the window's liked pairs whose item had no training interaction (recall only).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy.stats import rankdata

from features.contracts import C
from models.evaluate import series_mean
from models.policy import paired_bootstrap

KS = (5, 10, 20, 50, 100)
"""The cut-offs a review reports (the serving lists are 100 long)."""


def per_user_at_k(recs: pl.DataFrame, holdout: pl.DataFrame, ks: tuple[int, ...]) -> pl.DataFrame:
    """One row per holdout user: ``precision_at_<k>``, ``recall_at_<k>``, ``ndcg_at_<k>``,
    ``map_at_<k>``, ``hit_at_<k>`` for every k in ``ks``. Users without lists score 0."""
    relevant = holdout.select(C.user_id, C.item_id).unique()
    n_rel = relevant.group_by(C.user_id).agg(n_rel=pl.len())
    hits = (
        recs.select(C.user_id, C.item_id, C.rank)
        .filter(pl.col(C.rank) <= max(ks))
        .join(relevant, on=[C.user_id, C.item_id], how="inner")
        .sort(C.user_id, C.rank)
        .with_columns(n_hit=pl.int_range(1, pl.len() + 1).over(C.user_id))
    )
    out = n_rel.sort(C.user_id)
    for k in ks:
        at = hits.filter(pl.col(C.rank) <= k)
        agg = at.group_by(C.user_id).agg(
            hits=pl.len(),
            dcg=(1.0 / (pl.col(C.rank).cast(pl.Float64) + 1.0).log(2)).sum(),
            ap=(pl.col("n_hit") / pl.col(C.rank)).sum(),
        )
        discounts = np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))
        joined = out.select(C.user_id, "n_rel").join(
            agg, on=C.user_id, how="left", maintain_order="left"
        )
        joined = joined.fill_null(0)
        n = joined["n_rel"].to_numpy()
        h = joined["hits"].to_numpy().astype(float)
        capped = np.minimum(n, k)
        out = out.with_columns(
            pl.Series(f"precision_at_{k}", h / k),
            pl.Series(f"recall_at_{k}", h / np.maximum(n, 1)),
            pl.Series(f"ndcg_at_{k}", joined["dcg"].to_numpy() / discounts[capped - 1]),
            pl.Series(f"map_at_{k}", joined["ap"].to_numpy() / np.maximum(capped, 1)),
            pl.Series(f"hit_at_{k}", (h > 0).astype(float)),
        )
    return out.drop("n_rel")


def beyond_accuracy(
    recs: pl.DataFrame,
    popularity: pl.DataFrame,
    n_catalog: int,
    ks: tuple[int, ...],
    category: pl.DataFrame | None = None,
) -> dict[str, float]:
    """``coverage``, ``popularity``, ``popularity_ratio``, ``novelty`` and ``diversity`` at each
    k (module docstring) of one candidate's lists.

    Args:
        recs: one row per user_id x rank.
        popularity: one row per catalog item: ``item_id, share`` (training users who touched it).
        n_catalog: items in the catalog.
        ks: cut-offs.
        category: one row per item: ``item_id, category`` (None: no diversity).
    """
    floor = 1.0 / max(n_catalog, 1)  # an item nobody touched counts as one in the catalog
    catalog_mean = series_mean(popularity["share"]) or floor
    # A fixed row order: means summed in another order differ in the last bits, and a rerun on
    # the same data must log the same numbers. Only the columns read, the categories as codes
    # (diversity compares them): 100-long lists of every window user are millions of rows.
    scored = (
        recs.select(C.user_id, C.rank, C.item_id)
        .sort(C.user_id, C.rank)
        .join(popularity, on=C.item_id, how="left", maintain_order="left")
        .with_columns(pl.col("share").fill_null(0.0))
    )
    if category is not None:
        codes = category.select(C.item_id, pl.col("category").rank("dense").alias("category"))
        scored = scored.join(codes, on=C.item_id, how="left", maintain_order="left")
    out: dict[str, float] = {}
    for k in ks:
        top = scored.filter(pl.col(C.rank) <= k)
        if top.height == 0:
            continue
        mean_pop = series_mean(top["share"])
        out[f"coverage_at_{k}"] = top[C.item_id].n_unique() / max(n_catalog, 1)
        out[f"popularity_at_{k}"] = mean_pop
        out[f"popularity_ratio_at_{k}"] = mean_pop / catalog_mean
        out[f"novelty_at_{k}"] = series_mean(-(top["share"].clip(lower_bound=floor)).log(2))
        if category is not None:
            out[f"diversity_at_{k}"] = _intra_list_diversity(top)
    return out


def _intra_list_diversity(top: pl.DataFrame) -> float:
    """Mean over lists of the share of item pairs whose categories differ."""
    counts = (
        top.group_by(C.user_id, "category").agg(n=pl.len()).group_by(C.user_id)
        .agg(total=pl.col("n").sum(), same=(pl.col("n") * (pl.col("n") - 1)).sum())
        .sort(C.user_id)
    )  # fmt: skip
    pairs = counts["total"] * (counts["total"] - 1)
    share = 1.0 - counts["same"] / pairs.clip(lower_bound=1)
    return series_mean(share.filter(pairs > 0))


def _median(values: pl.Series) -> float:
    median = values.median()
    return float(median) if isinstance(median, int | float) else 0.0


def user_segments(holdout_users: pl.DataFrame, train_counts: pl.DataFrame) -> pl.DataFrame:
    """One row per window user x segment it belongs to: ``warm`` or ``cold`` (its
    ``user_segment``), and ``light`` or ``heavy`` for warm users (at most / more than the median
    of their training interactions)."""
    warm = holdout_users.filter(pl.col("user_segment") == "warm").join(
        train_counts, on=C.user_id, how="left"
    )
    median = _median(warm["n_train"].fill_null(0))
    weight = warm.select(
        C.user_id,
        segment=pl.when(pl.col("n_train").fill_null(0) <= median)
        .then(pl.lit("light"))
        .otherwise(pl.lit("heavy")),
    )
    return pl.concat(
        [holdout_users.select(C.user_id, segment=pl.col("user_segment")), weight]
    ).sort(C.user_id, "segment")


def review_metrics(
    lists: dict[str, pl.DataFrame],
    holdout: pl.DataFrame,
    segments: pl.DataFrame,
    new_items: pl.Series,
    popularity: pl.DataFrame,
    n_catalog: int,
    ks: tuple[int, ...] = KS,
    category: pl.DataFrame | None = None,
    per_users: Mapping[str, pl.DataFrame] | None = None,
) -> dict[str, float]:
    """Every metric of the module docstring, ``<candidate>_<metric>_at_<k>`` overall and
    ``<candidate>_<segment>_<metric>_at_<k>`` per segment, for each candidate's ``lists`` on
    the same ``holdout`` users (``per_users``: their :func:`per_user_at_k` when the caller
    has it already)."""
    out: dict[str, float] = {}
    fresh = holdout.filter(pl.col(C.item_id).is_in(new_items.implode()))
    for name, recs in lists.items():
        found = (per_users or {}).get(name)
        per_user = found if found is not None else per_user_at_k(recs, holdout, ks)
        metric_columns = [c for c in per_user.columns if c != C.user_id]
        means = per_user.select(pl.col(metric_columns).mean()).row(0, named=True)
        out.update({f"{name}_{m}": float(v or 0.0) for m, v in means.items()})
        tagged = per_user.join(segments, on=C.user_id, how="inner").sort("segment", C.user_id)
        for (segment,), rows in tagged.group_by("segment", maintain_order=True):
            seg_means = rows.select(pl.col(metric_columns).mean()).row(0, named=True)
            out.update({f"{name}_{segment}_{m}": float(v or 0.0) for m, v in seg_means.items()})
            out[f"{name}_{segment}_n_users"] = float(rows.height)
        if fresh.height:
            new_recall = per_user_at_k(recs, fresh, ks)
            for k in ks:
                out[f"{name}_new_items_recall_at_{k}"] = series_mean(new_recall[f"recall_at_{k}"])
        out.update(
            {
                f"{name}_{m}": v
                for m, v in beyond_accuracy(recs, popularity, n_catalog, ks, category).items()
            }
        )
    return out


def intervals(
    lists: dict[str, pl.DataFrame],
    holdout: pl.DataFrame,
    ks: tuple[int, ...] = KS,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """``<candidate>_<metric>_at_<k>`` -> the 95% bootstrap interval (resampling users) of
    each ranking metric's mean, for the model card's table."""
    out: dict[str, tuple[float, float]] = {}
    for name, recs in lists.items():
        out.update(per_user_intervals(name, per_user_at_k(recs, holdout, ks), n_resamples, seed))
    return out


def per_user_intervals(
    name: str, per_user: pl.DataFrame, n_resamples: int = 1000, seed: int = 0
) -> dict[str, tuple[float, float]]:
    """:func:`intervals` of one candidate from its :func:`per_user_at_k`."""
    out: dict[str, tuple[float, float]] = {}
    for column in per_user.columns:
        if column == C.user_id:
            continue
        ci = paired_bootstrap(per_user[column].to_numpy(), n_resamples, seed)
        out[f"{name}_{column}"] = (ci.low, ci.high)
    return out


def losing_segments(
    metrics: dict[str, float], reference: str, metric: str, segments: tuple[str, ...]
) -> list[str]:
    """The segments where the model's ``metric`` is below ``reference``'s."""
    return [
        s
        for s in segments
        if f"model_{s}_{metric}" in metrics
        and metrics[f"model_{s}_{metric}"] < metrics.get(f"{reference}_{s}_{metric}", 0.0)
    ]


SEGMENT_NAMES = ("warm", "cold", "light", "heavy")


def _decision(facts: CardFacts) -> str:
    if facts.promoted and facts.serves:
        return "the challenger's configuration was promoted: this version serves (`champion`)."
    if facts.promoted:
        return (
            "the challenger's configuration won the gate; this version does not serve (a backfill)."
        )
    if facts.serves:
        return (
            "the challenger's configuration was not promoted; this version is the champion's "
            "configuration refitted on the new data, and it serves (`champion`)."
        )
    return (
        "the challenger's configuration was not promoted, and this version does not serve (a "
        "backfill, or no model has passed the gate yet)."
    )


def _cell(value: float | None, ci: tuple[float, float] | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if ci is None else f"{value:.4f} [{ci[0]:.4f}, {ci[1]:.4f}]"


@dataclass(frozen=True)
class CardFacts:
    """What a model card says besides the metrics."""

    name: str
    as_of: str
    window_start: str
    volumes: dict[str, int]
    features: dict[str, list[str]]
    params: dict[str, object]
    promoted: bool
    reasons: list[str]
    serving: dict[str, str]
    serves: bool = True  # this version becomes ``champion`` (promoted, or the champion refitted)


def model_card(
    facts: CardFacts,
    metrics: dict[str, float],
    candidates: list[str],
    ks: tuple[int, ...] = KS,
    cis: dict[str, tuple[float, float]] | None = None,
) -> str:
    """The model card (markdown): data window and volumes, features, hyperparameters, metrics
    at each k beside the references, the gate's comparisons with their bootstrap intervals, the
    decision, and the known limits (segments where the model loses)."""
    lines = [
        f"# {facts.name}, as of {facts.as_of}",
        "",
        f"**Decision:** {_decision(facts)} "
        f"Serving: {', '.join(f'{s} users by {c}' for s, c in facts.serving.items())}.",
        "",
        "## Data",
        "",
        f"- candidates trained on events before `{facts.window_start}` and evaluated on the "
        f"window `{facts.window_start}` .. `{facts.as_of}` (the metrics below); this version is "
        "the serving configuration refitted on every event before `as_of`",
        *(f"- {key.replace('_', ' ')}: {value:,}" for key, value in facts.volumes.items()),
        "",
        "## Features",
        "",
        *(
            f"- {side}: {', '.join(names) or 'identity only'}"
            for side, names in facts.features.items()
        ),
        "",
        "## Hyperparameters",
        "",
        "| parameter | value |",
        "|---|---|",
        *(f"| {key} | {value} |" for key, value in facts.params.items()),
        "",
        "## Metrics on the window (same users for every candidate; 95% bootstrap intervals)",
        "",
        "| metric | " + " | ".join(candidates) + " |",
        "|---|" + "---:|" * len(candidates),
    ]
    auc_row = [metrics.get(f"{c}_auc") for c in candidates]
    if any(v is not None for v in auc_row):
        lines.append(
            "| auc | " + " | ".join("-" if v is None else f"{v:.4f}" for v in auc_row) + " |"
        )
    for metric in ("precision", "recall", "ndcg", "map", "hit", "coverage", "popularity_ratio",
                   "novelty", "diversity"):  # fmt: skip
        for k in ks:
            keys = [f"{c}_{metric}_at_{k}" for c in candidates]
            if any(key in metrics for key in keys):
                cells = " | ".join(_cell(metrics.get(key), (cis or {}).get(key)) for key in keys)
                lines.append(f"| {metric}@{k} | {cells} |")
    k = ks[1] if len(ks) > 1 else ks[0]
    lines += [
        "",
        f"## Per segment (precision@{k})",
        "",
        "| segment | users | " + " | ".join(candidates) + " |",
        "|---|---:|" + "---:|" * len(candidates),
    ]
    for segment in SEGMENT_NAMES:
        n = metrics.get(f"model_{segment}_n_users")
        if n is None:
            continue
        cells = " | ".join(
            f"{metrics.get(f'{c}_{segment}_precision_at_{k}', float('nan')):.4f}"
            for c in candidates
        )
        lines.append(f"| {segment} | {int(n):,} | {cells} |")
    new = [metrics.get(f"{c}_new_items_recall_at_{k}") for c in candidates]
    if any(v is not None for v in new):
        cells = " | ".join("-" if v is None else f"{v:.4f}" for v in new)
        lines.append(f"| new items (recall@{k}) | | {cells} |")
    losing = losing_segments(metrics, "baseline", f"precision_at_{k}", SEGMENT_NAMES)
    lines += [
        "",
        "## The gate (paired bootstrap over users, 95% intervals)",
        "",
        *(f"- {reason}" for reason in facts.reasons),
        "",
        "## Known limits",
        "",
        f"- loses to popularity on precision@{k} for: {', '.join(losing)}"
        if losing
        else f"- no segment where it loses to popularity on precision@{k}",
        "- scores are on the model's own scale: compare ranks, not scores, across models",
    ]
    return "\n".join(lines) + "\n"


def auc(scores: np.ndarray, relevant: list[np.ndarray], excluded: list[np.ndarray]) -> float:
    """Mean over users of the ROC AUC of their full scores (users x items): the share of
    (liked, not liked) item pairs ranked in the right order, ties counting a half; items a user
    had already seen are left out. Users without a liked item are skipped."""
    values = []
    for row, liked, seen in zip(scores, relevant, excluded, strict=True):
        keep = np.ones(row.size, dtype=bool)
        keep[seen] = False
        positive = np.zeros(row.size, dtype=bool)
        positive[liked] = True
        positive &= keep
        n_pos = int(positive.sum())
        n_neg = int(keep.sum()) - n_pos
        if n_pos == 0 or n_neg == 0:
            continue
        kept = row[keep]
        ranks = _average_ranks(kept)  # 1 = lowest score
        pos_ranks = ranks[positive[keep]]
        values.append((pos_ranks.sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    return float(np.mean(values)) if values else 0.0


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties given their average rank (as the Mann-Whitney U statistic wants)."""
    return np.asarray(rankdata(values, method="average"), dtype=np.float64)
