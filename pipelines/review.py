"""The review of a training for the MLflow run: the metrics a reviewer compares (at k = 5 ... 100,
beyond accuracy, per segment; :mod:`models.review`), the plots (:mod:`models.plots`) and the model
card, written to a folder the train stage logs as the run's ``review/`` artifacts; and the
training's rows for analysts (``model_runs``, ``segment_choices``)."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa

from features.contracts import C
from features.matrices import attribute_columns
from models.base import Recommender, TrainingData
from models.evaluate import mean_metrics, per_user_metrics
from models.plots import (
    embedding_projection,
    learning_curve,
    long_tail,
    metric_at_k,
    save,
    score_distribution,
    segment_bars,
)
from models.policy import fill_to_k
from models.review import (
    KS,
    SEGMENT_NAMES,
    CardFacts,
    auc,
    model_card,
    per_user_at_k,
    per_user_intervals,
    review_metrics,
    user_segments,
)
from pipelines.stores import Stores, lake, warehouse
from pipelines.stores.tracking import log_step

CARD = "model_card.md"
LIST_COLUMNS = (C.user_id, C.rank, C.item_id, C.score)
"""What the review reads of a list (no ``source``: a list's candidate is its name)."""


@dataclass(frozen=True)
class Review:
    """The review's metrics, its model card (markdown) and the files written."""

    metrics: dict[str, float]
    card: str
    files: list[Path]


def item_category(items: pl.DataFrame) -> pl.DataFrame | None:
    """One row per item with the category the review colours and diversifies by: the
    ``category`` column, else the first of the item's tags (a genre), else None."""
    if "category" in items.columns:
        return items.select(C.item_id, category=pl.col("category").cast(pl.String))
    _, lists = attribute_columns(items, C.item_id)
    if lists:
        return items.select(C.item_id, category=pl.col(lists[0]).list.first())
    return None


class Reviewer:
    """The review of one training, built candidate by candidate.

    Each candidate's lists (as long as the review's longest cut-off) are reduced to their
    metrics as they arrive (:meth:`add`); only the candidates the plots and the card show keep
    their top-``k`` rows and the intervals of their means. One candidate's lists are held at a
    time: on ``large`` (43k window users x 100 rows) that is ~260 MB each, and holding the
    dozen candidates' at once made training peak at 6.8 GB.

    Args:
        holdout: the window's truth; ``window_users``: its users with ``user_segment``.
        data: what the candidates were fitted on (before the window).
        k: the gate's cut-off (the per-segment bars, the long tail and the score plot use it).
    """

    SHOWN = ("model", "baseline", "champion", "ease")
    """The candidates in the plots and the card's table, in this order."""
    BLOCK = 10_000
    """Users scored at a time for a model's review lists."""

    def __init__(
        self, holdout: pl.DataFrame, window_users: pl.DataFrame, data: TrainingData, k: int
    ) -> None:
        users = data.interactions.group_by(C.user_id).agg(n_train=pl.len())
        self.segments = user_segments(window_users.select(C.user_id, "user_segment"), users)
        touched = data.interactions.group_by(C.item_id).agg(n=pl.col(C.user_id).n_unique())
        n_train_users = max(data.interactions[C.user_id].n_unique(), 1)
        self.popularity = (
            data.items.select(C.item_id)
            .join(touched, on=C.item_id, how="left")
            .select(C.item_id, share=pl.col("n").fill_null(0) / n_train_users)
        )
        self.new_items = self.popularity.filter(pl.col("share") == 0)[C.item_id]
        self.category = item_category(data.items)
        self.holdout, self.n_catalog, self.k = holdout, data.items.height, k
        self.metrics: dict[str, float] = {}
        self.cis: dict[str, tuple[float, float]] = {}
        self.tops: dict[str, pl.DataFrame] = {}

    def add(self, name: str, recs: pl.DataFrame) -> None:
        """Every review metric of ``name``'s lists (the caller may drop them afterwards)."""
        per_user = per_user_at_k(recs, self.holdout, KS)
        found = review_metrics(
            {name: recs}, self.holdout, self.segments, self.new_items, self.popularity,
            self.n_catalog, KS, self.category, per_users={name: per_user},
        )  # fmt: skip
        self.metrics.update(found)
        if name in self.SHOWN:
            self.cis.update(per_user_intervals(name, per_user))
            self.tops[name] = recs.filter(pl.col(C.rank) <= self.k)

    def add_served(
        self,
        models: Mapping[str, Recommender | None],
        popular: pl.DataFrame,
        users: pl.DataFrame,
        seen: pl.DataFrame,
        threads: int,
    ) -> None:
        """``baseline`` (``popular``: the popular lists of ``users``, as long as the review's
        longest cut-off) and each model's lists as they would be served (topped up from
        ``popular``), one model at a time."""
        self.add("baseline", popular)
        for name, model in models.items():
            if model is None:
                continue
            # In blocks of users: one block's scoring and merge at a time besides the lists.
            parts = []
            for start in range(0, users.height, self.BLOCK):
                block = users.slice(start, self.BLOCK)
                described = block.filter(pl.Series(model.describes(block)))
                pairs = seen.join(block.select(C.user_id), on=C.user_id, how="semi")
                recs = model.recommend(described, max(KS), exclude=pairs, num_threads=threads)
                fallback = popular.join(block.select(C.user_id), on=C.user_id, how="semi")
                parts.append(fill_to_k(recs, fallback, max(KS)).select(LIST_COLUMNS))
            self.add(name, pl.concat(parts) if parts else popular.select(LIST_COLUMNS).clear())
            del parts

    def write(
        self,
        directory: Path,
        *,
        curve: list[float],
        best_epoch: int,
        item_embeddings: tuple[pl.Series, np.ndarray],
        facts: CardFacts,
        extra: dict[str, float] | None = None,
        fit_curve: list[float] | None = None,
    ) -> Review:
        """The plots and the model card into ``directory``.

        Args:
            curve: the validation metric per epoch; ``best_epoch`` the epoch kept;
                ``fit_curve`` the same metric on training users' own data (the loss proxy),
                when measured.
            item_embeddings: (item ids, embeddings) of the registered version.
            facts: what the model card says besides the metrics.
            extra: metrics computed elsewhere (AUC) that the card and the run report too.
        """
        metrics = {**self.metrics, **(extra or {})}
        k = self.k
        lists = {name: self.tops[name] for name in self.SHOWN if name in self.tops}
        candidates = list(lists)
        ids, embeddings = item_embeddings
        labels = None
        if self.category is not None:
            by_id = dict(zip(self.category[C.item_id], self.category["category"], strict=True))
            labels = [str(by_id.get(i)) for i in ids]
        figures = {
            "learning_curve": learning_curve(curve, best_epoch, f"precision@{k}", fit_curve),
            "precision_at_k": metric_at_k(metrics, candidates, "precision", KS),
            "recall_at_k": metric_at_k(metrics, candidates, "recall", KS),
            "segments": segment_bars(metrics, candidates, [*SEGMENT_NAMES], f"precision_at_{k}"),
            "long_tail": long_tail(lists, self.popularity, k),
            "item_embeddings": embedding_projection(embeddings, labels),
            "scores": score_distribution({c: lists[c] for c in candidates if c != "baseline"}, k),
        }
        directory.mkdir(parents=True, exist_ok=True)
        files = save(figures, directory)
        text = model_card(facts, metrics, candidates, KS, self.cis)
        (directory / CARD).write_text(text)
        return Review(metrics, text, [*files, directory / CARD])


def names(vocabulary: pl.Series) -> list[str]:
    """The attribute names in a feature vocabulary (``name=value`` tokens; identities left out)."""
    found = vocabulary.str.split_exact("=", 1).struct.field("field_0").unique().to_list()
    return sorted(str(n) for n in found if n and n != "id")


def record_model_run(
    con: duckdb.DuckDBPyConnection,
    mlflow_run_id: str,
    version: str,
    run_id: str,
    as_of: datetime,
    promoted: bool,
    decision: str,
    serving: dict[str, str],
    metrics: dict[str, float],
    k: int,
    epochs: int,
) -> None:
    """One row per training decision in the warehouse ``model_runs``, for analysts (the
    training's commit: see :func:`pipelines.train.train`)."""
    text, number = pa.string(), pa.float64()
    row = {
        "run_id": pa.array([run_id], text),
        "mlflow_run_id": pa.array([mlflow_run_id], text),
        "model_version": pa.array([version], text),
        "as_of": pa.array([as_of], pa.timestamp("us", tz="UTC")),
        "promoted": pa.array([promoted], pa.bool_()),
        "decision": pa.array([decision], text),
        "serve_warm": pa.array([serving.get("warm")], text),
        "serve_cold": pa.array([serving.get("cold")], text),
        "epochs": pa.array([epochs], pa.int64()),
        # typed: the first night has no champion, and a null column would fix the type
        **{
            f"{c}_precision_at_{k}": pa.array([metrics.get(f"{c}_precision_at_{k}")], number)
            for c in ("model", "baseline", "champion")
        },
        "n_users": pa.array([metrics.get("model_n_users")], number),
    }
    warehouse.append(con, "model_runs", pa.table(row))


def committed_trainings(warehouse_path: Path) -> set[str]:
    """MLflow run ids whose decision reached ``model_runs`` (the training's commit)."""
    if not warehouse_path.exists():
        return set()
    with warehouse.connect(warehouse_path, read_only=True) as con:
        if not warehouse.table_exists(con, "model_runs"):
            return set()
        rows = con.execute("select distinct mlflow_run_id from model_runs").fetchall()
    return {str(r[0]) for r in rows}


def record_segment_choices(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    version: str,
    as_of: datetime,
    serving: dict[str, str],
    won: dict[str, str],
    metrics: dict[str, float],
    k: int,
) -> None:
    """One row per segment in the warehouse ``segment_choices``: what serves it (``model`` is
    the serving model), and its precision@k on the segment's window users."""
    names = list(serving)
    winners = [serving[s] for s in names]
    ts = pa.timestamp("us", tz="UTC")
    warehouse.append(
        con,
        "segment_choices",
        pa.table(
            {
                "run_id": [run_id] * len(names),
                "model_version": [version] * len(names),
                "as_of": pa.array([as_of] * len(names), ts),
                "segment": names,
                "candidate": winners,
                f"precision_at_{k}": [
                    metrics.get(f"{won[s].replace(':', '_')}_{s}_precision_at_{k}", 0.0)
                    for s in names
                ],
                "n_users": [metrics.get(f"baseline_{s}_n_users", 0.0) for s in names],
            }
        ),
    )


AUC_USERS = 2_000
"""AUC ranks every catalog item for each user: computed on a fixed sample of window users."""


def auc_metrics(
    models: Mapping[str, Any],
    users: pl.DataFrame,
    holdout: pl.DataFrame,
    seen: pl.DataFrame,
) -> dict[str, float]:
    """``<candidate>_auc`` for every candidate with ``full_scores`` (LightFM, EASE, popularity
    over any window or within segments) on the same sample of at most :data:`AUC_USERS` window
    users (a fixed pseudo-random one). Candidates that are None are left out."""
    sample = users.sort(pl.col(C.user_id).hash(seed=0)).head(AUC_USERS).sort(C.user_id)
    out: dict[str, float] = {}
    for name, model in models.items():
        if model is None:
            continue
        scores = model.full_scores(sample)
        out[f"{name.replace(':', '_')}_auc"] = auc(
            scores, *_positions(sample, holdout, seen, model.item_ids)
        )
    return out


def _positions(
    users: pl.DataFrame, holdout: pl.DataFrame, seen: pl.DataFrame, item_ids: pl.Series
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per user (in ``users`` order): positions in ``item_ids`` of the liked and the seen items."""
    order = users.select(C.user_id).with_row_index("u")
    index = pl.DataFrame({C.item_id: item_ids}).with_row_index("i")

    def grouped(pairs: pl.DataFrame) -> list[np.ndarray]:
        coded = pairs.join(order, on=C.user_id).join(index, on=C.item_id)
        lists = coded.group_by("u").agg(pl.col("i"))
        by_user = dict(zip(lists["u"].to_list(), lists["i"].to_list(), strict=True))
        return [np.asarray(by_user.get(u, []), dtype=np.int64) for u in range(users.height)]

    return grouped(holdout.select(C.user_id, C.item_id)), grouped(seen)


def training_inputs(stores: Stores, directory: Path) -> dict[str, str]:
    """Write ``inputs.json`` (every clean partition file with its SHA-256, and the validation
    runs that let them in) into ``directory``; returns the tags that summarise it."""
    files = lake.checksums(stores.lake, "clean")
    runs = warehouse.validation_run_ids(stores.warehouse)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "inputs.json").write_text(
        json.dumps({"clean_files": files, "validation_runs": runs}, indent=1)
    )
    joined = "".join(f"{name}:{digest}\n" for name, digest in files.items())
    return {
        "lake_clean_files": str(len(files)),
        "lake_clean_sha256": hashlib.sha256(joined.encode()).hexdigest(),
        "gx_validation_run_id": runs[-1] if runs else "none",
    }


logger = logging.getLogger(__name__)


def epoch_done(epoch: int, value: float, fit: float | None, k: int) -> float:
    """An epoch's validation metric (and fit on the training data): points of the MLflow
    curves and a line in the run's logs (Prefect shows ``pipelines`` loggers). Returns the fit
    (nan when not measured), for the learning-curve plot."""
    log_step(f"validation_precision_at_{k}", value, epoch)
    if fit is not None:
        log_step(f"train_precision_at_{k}", fit, epoch)
    logger.info(
        "epoch %d: validation precision@%d %.4f, on its training data %s",
        epoch, k, value, "-" if fit is None else f"{fit:.4f}",
    )  # fmt: skip
    return float("nan") if fit is None else fit


FIT_USERS = 2_000
"""The training-fit curve (the loss proxy) scores a fixed sample of this many training users."""


def fit_metric(data: TrainingData, k: int, threads: int) -> Callable[[Recommender], float]:
    """precision@k of a snapshot against the training positives of a fixed sample of training
    users, nothing excluded: how well it fits what it learns from (it rises while the
    validation metric may not, which is what over-fitting looks like)."""
    ids = data.interactions[C.user_id].unique()
    sample = pl.DataFrame({C.user_id: ids}).sort(pl.col(C.user_id).hash(seed=0)).head(FIT_USERS)
    users = sample.join(data.users, on=C.user_id, how="left").sort(C.user_id)
    truth = data.interactions.join(sample, on=C.user_id, how="semi").select(C.user_id, C.item_id)

    def fit(model: Recommender) -> float:
        recs = model.recommend(users, k, num_threads=threads)
        return mean_metrics(per_user_metrics(recs, truth, k), k)[f"precision_at_{k}"]

    return fit
