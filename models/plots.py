"""The plots a reviewer looks at instead of reading tables, drawn headless from the review's
numbers and lists. Each function returns a figure; :func:`save` writes PNGs. Figures are built
with matplotlib's object API (no pyplot), so no backend or global state is touched: PNGs are
rendered by Agg whatever the process's display."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from features.contracts import C

COLORS = {"model": "tab:blue", "champion": "tab:green", "baseline": "tab:gray", "ease": "tab:red"}


def _figure(title: str) -> tuple[Figure, Axes]:
    fig = Figure(figsize=(7, 4.2), dpi=100)
    ax = fig.subplots()
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return fig, ax


def learning_curve(
    curve: list[float], best_epoch: int, metric: str, fit: list[float] | None = None
) -> Figure:
    """Validation metric per epoch (and, when given, the same metric on training data), the
    kept epoch marked."""
    fig, ax = _figure(f"Learning curve: {metric}")
    epochs = np.arange(1, len(curve) + 1)
    ax.plot(epochs, curve, marker="o", color=COLORS["model"], label="validation sample")
    if fit:
        ax.plot(np.arange(1, len(fit) + 1), fit, marker=".", color="tab:purple",
                label="training users, their own data")  # fmt: skip
    if curve:
        ax.axvline(
            best_epoch, color="tab:orange", linestyle="--", label=f"kept: epoch {best_epoch}"
        )
        ax.legend()
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    return fig


def metric_at_k(
    metrics: dict[str, float], candidates: list[str], metric: str, ks: tuple[int, ...]
) -> Figure:
    """``metric`` at each k, one line per candidate."""
    fig, ax = _figure(f"{metric}@k, same window users")
    for name in candidates:
        keys = [f"{name}_{metric}_at_{k}" for k in ks]
        if all(key in metrics for key in keys):
            values = [metrics[key] for key in keys]
            ax.plot(ks, values, marker="o", label=name, color=COLORS.get(name))
    ax.set_xscale("log")
    ax.set_xticks(list(ks), [str(k) for k in ks])
    ax.set_xlabel("k")
    ax.set_ylabel(metric)
    ax.legend()
    return fig


def segment_bars(
    metrics: dict[str, float], candidates: list[str], segments: list[str], metric: str
) -> Figure:
    """``metric`` per user segment, grouped bars per candidate."""
    fig, ax = _figure(f"{metric} by segment")
    width = 0.8 / max(len(candidates), 1)
    x = np.arange(len(segments))
    for i, name in enumerate(candidates):
        values = [metrics.get(f"{name}_{s}_{metric}", 0.0) for s in segments]
        ax.bar(x + i * width, values, width, label=name, color=COLORS.get(name))
    ax.set_xticks(x + width * (len(candidates) - 1) / 2, segments)
    ax.set_ylabel(metric)
    ax.legend()
    return fig


def long_tail(lists: dict[str, pl.DataFrame], popularity: pl.DataFrame, k: int) -> Figure:
    """Items ordered by training popularity (most popular first); for the catalog's own
    interactions and each candidate's top-k, the cumulative share going to the first x% of
    items. A curve hugging the top-left recommends only blockbusters."""
    fig, ax = _figure(f"Long tail: where interactions and top-{k} lists go")
    ranked = popularity.sort(["share", C.item_id], descending=[True, False]).with_row_index("pos")
    n = max(ranked.height, 1)
    x = np.arange(1, n + 1) / n
    share = ranked["share"].to_numpy()
    total = share.sum()
    if total > 0:
        ax.plot(x, np.cumsum(share) / total, color="black", label="catalog interactions")
    for name, recs in lists.items():
        counts = (
            recs.filter(pl.col(C.rank) <= k).group_by(C.item_id).agg(n=pl.len())
            .join(ranked.select(C.item_id, "pos"), on=C.item_id, how="inner")
        )  # fmt: skip
        per_pos = np.zeros(n)
        per_pos[counts["pos"].to_numpy()] = counts["n"].to_numpy()
        if per_pos.sum() > 0:
            ax.plot(x, np.cumsum(per_pos) / per_pos.sum(), label=name, color=COLORS.get(name))
    ax.set_xlabel("share of items, most popular first")
    ax.set_ylabel("cumulative share")
    ax.legend()
    return fig


def embedding_projection(embeddings: np.ndarray, labels: list[str] | None) -> Figure:
    """The item embeddings projected on their two principal components, coloured by category
    (the ten most frequent; the rest grey)."""
    fig, ax = _figure("Item embeddings, first two principal components")
    centred = embeddings - embeddings.mean(axis=0)
    if centred.shape[0] >= 2 and centred.shape[1] >= 2:
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        xy = centred @ vt[:2].T
    else:
        xy = np.zeros((centred.shape[0], 2))
    if labels is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=4, alpha=0.5)
    else:
        values, counts = np.unique(np.array(labels, dtype=object).astype(str), return_counts=True)
        top = [v for _, v in sorted(zip(-counts, values, strict=True))][:10]
        label_arr = np.array(labels, dtype=object).astype(str)
        other = ~np.isin(label_arr, top)
        ax.scatter(xy[other, 0], xy[other, 1], s=4, alpha=0.3, color="lightgrey", label="other")
        for value in top:
            mask = label_arr == value
            ax.scatter(xy[mask, 0], xy[mask, 1], s=5, alpha=0.7, label=value)
        ax.legend(fontsize=7, markerscale=3, loc="best")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    return fig


def score_distribution(lists: dict[str, pl.DataFrame], k: int) -> Figure:
    """Histogram of the scores in each candidate's top-k (scales differ between models)."""
    fig, ax = _figure(f"Scores in the top-{k} lists")
    for name, recs in lists.items():
        scores = recs.filter(pl.col(C.rank) <= k)[C.score].to_numpy()
        scores = scores[np.isfinite(scores)]
        if scores.size:
            ax.hist(scores, bins=50, alpha=0.5, label=name, color=COLORS.get(name))
    ax.set_xlabel("score")
    ax.set_ylabel("rows")
    ax.legend()
    return fig


def save(figures: dict[str, Figure], directory: Path) -> list[Path]:
    """Write each figure as ``<name>.png`` into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in figures.items():
        path = directory / f"{name}.png"
        fig.tight_layout()
        fig.savefig(path, format="png")
        paths.append(path)
    return paths
