"""The LightFM hybrid recommender: training, cold-start-aware scoring, save and load.

What is kept after training is only what scoring needs: the per-feature embeddings of
users (so any user with known attributes can be represented, including users who arrived after
training), and the final item representations.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import polars as pl
import scipy.sparse as sp
from lightfm import LightFM
from tqdm import tqdm

from features.contracts import C
from features.matrices import (
    ID_TOKEN,
    TrainingMatrices,
    feature_matrix,
    feature_tokens,
    training_matrices,
)
from models.base import (
    Ranked,
    RecommendsByRank,
    TrainingData,
    allowed_mask,
    similar_items_frame,
)
from models.params import LightFMParams
from models.scoring import KernelRules, top_k

_ARRAYS = "arrays.npz"
_META = "meta.json"


@dataclass(frozen=True)
class LightFMRecommender(RecommendsByRank):
    """A trained hybrid model, reduced to what scoring needs (user biases are dropped: constant
    per user, they never change a ranking)."""

    kind: ClassVar[str] = "lightfm"

    params: LightFMParams
    user_vocabulary: pl.Series
    user_feature_embeddings: np.ndarray  # n_user_features x d
    item_ids: pl.Series
    item_embeddings: np.ndarray  # n_items x d, features already summed
    item_biases: np.ndarray  # n_items

    @classmethod
    def fit(cls, data: TrainingData, params: Any = None) -> Self:
        """Train on the feature tables (see :func:`train_lightfm`)."""
        params = params if isinstance(params, LightFMParams) else LightFMParams()
        if data.interactions.height == 0:
            raise ValueError("LightFM: no interactions to fit on")
        matrices = training_matrices(data.interactions, data.users, data.items)
        return cls.from_matrices(matrices, params)

    @classmethod
    def from_matrices(cls, matrices: TrainingMatrices, params: LightFMParams) -> Self:
        """Fit on prepared matrices. Deterministic for a given ``random_state`` when
        ``num_threads`` is 1."""
        snapshot = _snapshot(_fit(matrices, params), matrices, params)
        return cls(**{f.name: getattr(snapshot, f.name) for f in fields(cls)})

    @cached_property
    def _warm_ids(self) -> pl.Series:
        """The user ids with an identity embedding (the score stage asks chunk after chunk)."""
        warm_ids = self.user_vocabulary.filter(self.user_vocabulary.str.starts_with(ID_TOKEN))
        return warm_ids.str.strip_prefix(ID_TOKEN)

    @cached_property
    def _attributes(self) -> tuple[str, ...]:
        names = self.user_vocabulary.str.split_exact("=", 1).struct.field("field_0").unique()
        return tuple(sorted(n for n in names.to_list() if n != ID_TOKEN.rstrip("=")))

    def _user_features(self, users: pl.DataFrame) -> tuple[sp.csr_matrix, pl.Series]:
        warm_ids = self._warm_ids
        columns = [c for c in self.user_attributes() if c in users.columns]
        lists = [c for c in columns if users.schema[c] == pl.List(pl.String)]
        scalars = [c for c in columns if c not in lists]
        tokens = feature_tokens(users, C.user_id, scalars, lists, warm_ids=warm_ids)
        return feature_matrix(tokens, users.height, self.user_vocabulary), warm_ids

    def describes(self, users: pl.DataFrame) -> np.ndarray:
        """Per user: whether the model knows anything about them (history or an attribute value
        it has an embedding for). Users it does not describe are only ranked by item biases."""
        features, _ = self._user_features(users)
        return np.asarray(features.getnnz(axis=1) > 0)

    def user_vectors(self, users: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(users x d+1 vectors, warm flag per user).

        The last column is 1, meeting the item bias in :meth:`item_vectors`; the user bias is
        left out because it is constant across items and cannot change a ranking. A user is warm
        when the model saw them in training (has an identity embedding); other users are
        represented by their attributes alone.
        """
        vectors, warm, _ = self._vectors(users)
        return vectors, warm

    def _vectors(self, users: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`user_vectors` and :meth:`describes`, from one build of the feature rows."""
        features, warm_ids = self._user_features(users)
        vectors = np.hstack([features @ self.user_feature_embeddings, np.ones((users.height, 1))])
        warm = users[C.user_id].is_in(warm_ids.implode()).to_numpy()
        return vectors.astype(np.float32), warm, np.asarray(features.getnnz(axis=1) > 0)

    def full_scores(self, users: pl.DataFrame) -> np.ndarray:
        """users x items (in :attr:`item_ids` order): every item's score."""
        vectors, _ = self.user_vectors(users)
        scores: np.ndarray = vectors @ self.item_vectors().T
        return scores

    def user_attributes(self) -> list[str]:
        """The user columns the model has feature embeddings for."""
        return list(self._attributes)

    def item_vectors(self) -> np.ndarray:
        """items x d+1: embedding, then the bias multiplied by the user's constant 1."""
        return np.hstack([self.item_embeddings, self.item_biases[:, None]]).astype(np.float32)

    def rank(
        self,
        users: pl.DataFrame,
        k: int,
        *,
        exclude: sp.csr_matrix | None = None,
        allowed: np.ndarray | None = None,
        rules: KernelRules | None = None,
        num_threads: int = 1,
    ) -> Ranked:
        """See :class:`models.base.Recommender`; ``source`` is ``model`` for warm users,
        ``cold_start`` for users scored from their attributes only; ``described`` as
        :meth:`describes` (from the same feature rows: they are built once)."""
        vectors, warm, described = self._vectors(users)
        idx, scores = top_k(
            vectors, self.item_vectors(), k,
            exclude=exclude, allowed=allowed, rules=rules, num_threads=num_threads,
        )  # fmt: skip
        source = np.where(warm, 0, 1).astype(np.int8)
        return Ranked(idx, scores, source, ("model", "cold_start"), described)

    def similar_items(
        self, k: int, *, allowed_items: pl.Series | None = None, num_threads: int = 1
    ) -> pl.DataFrame:
        """One row per item_id x rank (1..k): the most similar other items by cosine of their
        embeddings (``similar_item_id``, ``score``), restricted to ``allowed_items``."""
        norms = np.linalg.norm(self.item_embeddings, axis=1, keepdims=True)
        unit = self.item_embeddings / np.where(norms == 0, 1.0, norms)
        n = self.item_ids.len()
        idx, scores = top_k(
            unit, unit, k,
            exclude=sp.identity(n, dtype=np.int8, format="csr"),
            allowed=allowed_mask(allowed_items, self.item_ids),
            num_threads=num_threads,
        )  # fmt: skip
        return similar_items_frame(self.item_ids, idx, scores)

    def save(self, directory: Path) -> Path:
        """Write the model as ``arrays.npz`` + ``meta.json`` into ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            directory / _ARRAYS,
            user_feature_embeddings=self.user_feature_embeddings,
            item_embeddings=self.item_embeddings,
            item_biases=self.item_biases,
        )
        meta = {
            "kind": self.kind,
            "params": self.params.model_dump(),
            "user_vocabulary": self.user_vocabulary.to_list(),
            "item_ids": self.item_ids.to_list(),
        }
        (directory / _META).write_text(json.dumps(meta))
        return directory

    @classmethod
    def load(cls, directory: Path) -> Self:
        """Read a model written by :meth:`save`."""
        meta = json.loads((directory / _META).read_text())
        with np.load(directory / _ARRAYS) as arrays:
            return cls(
                params=LightFMParams.model_validate(meta["params"]),
                user_vocabulary=pl.Series("token", meta["user_vocabulary"], dtype=pl.String),
                user_feature_embeddings=arrays["user_feature_embeddings"],
                item_ids=pl.Series(C.item_id, meta["item_ids"], dtype=pl.String),
                item_embeddings=arrays["item_embeddings"],
                item_biases=arrays["item_biases"],
            )


@dataclass(frozen=True)
class EarlyStopped:
    """The best epoch's model, how many epochs it took, and the validation curve."""

    model: LightFMRecommender
    epochs: int
    curve: list[float]
    at_epoch: LightFMRecommender | None = None  # the model after ``also_epoch`` epochs


def train_with_early_stopping(
    matrices: TrainingMatrices,
    params: LightFMParams,
    validate: Callable[[LightFMRecommender], float],
    on_epoch: Callable[[int, float, float | None], None] | None = None,
    fit_metric: Callable[[LightFMRecommender], float] | None = None,
    also_epoch: int | None = None,
) -> EarlyStopped:
    """Train epoch by epoch (``fit_partial``), scoring each epoch with ``validate`` (higher is
    better); stop after ``params.patience`` epochs without a better score or at
    ``params.epochs``, and return the best epoch's model. With one thread the result equals
    :func:`train_lightfm` run for the returned number of epochs. ``on_epoch(epoch, value,
    fit)`` is told each epoch's score as it comes (a curve in MLflow, a line in the logs), with
    ``fit_metric`` of the same snapshot (how well it fits its own training data: the loss
    proxy; LightFM reports no loss) when given.

    ``also_epoch``: the model after that many epochs is returned too (``at_epoch``), trained on
    past the stop when it comes later: the same configuration with another epoch count (the
    champion's, say) costs its extra epochs only, not a second fit from scratch (with one
    thread it equals :func:`train_lightfm` for that many epochs)."""
    model = _new(params)
    best: tuple[float, int, LightFMRecommender] | None = None
    at_epoch: LightFMRecommender | None = None
    curve: list[float] = []
    epoch = 0
    # A progress bar in a terminal (none when stderr is not one: Prefect logs, CI).
    bar = tqdm(total=params.epochs, desc="LightFM epochs", unit="epoch", disable=None, leave=False)
    for epoch in range(1, params.epochs + 1):
        _fit_epochs(model, matrices, params, epochs=1)
        snapshot = _snapshot(model, matrices, params.model_copy(update={"epochs": epoch}))
        value = validate(snapshot)
        curve.append(value)
        if on_epoch is not None:
            on_epoch(epoch, value, None if fit_metric is None else fit_metric(snapshot))
        bar.update()
        bar.set_postfix(validation=f"{value:.4f}", best=f"{max(curve):.4f}")
        if epoch == also_epoch:
            at_epoch = snapshot
        if best is None or value > best[0]:
            best = (value, epoch, snapshot)
        elif params.patience is not None and epoch - best[1] >= params.patience:
            break
    bar.close()
    assert best is not None
    if also_epoch is not None and also_epoch > epoch:
        _fit_epochs(model, matrices, params, epochs=also_epoch - epoch)
        at_epoch = _snapshot(model, matrices, params.model_copy(update={"epochs": also_epoch}))
    return EarlyStopped(best[2], best[1], curve, at_epoch)


def train_lightfm(matrices: TrainingMatrices, params: LightFMParams) -> LightFMRecommender:
    """Fit a LightFM hybrid model on the training matrices.

    Deterministic for a given ``random_state`` when ``num_threads`` is 1.
    """
    return LightFMRecommender.from_matrices(matrices, params)


def _snapshot(
    model: LightFM, matrices: TrainingMatrices, params: LightFMParams
) -> LightFMRecommender:
    item_biases, item_embeddings = model.get_item_representations(matrices.item_features)
    return LightFMRecommender(
        params=params,
        user_vocabulary=matrices.user_vocabulary,
        user_feature_embeddings=model.user_embeddings.copy(),
        item_ids=matrices.item_ids,
        item_embeddings=item_embeddings,
        item_biases=item_biases,
    )


def _fit_epochs(
    model: LightFM, matrices: TrainingMatrices, params: LightFMParams, epochs: int
) -> None:
    model.fit_partial(
        matrices.interactions,
        user_features=matrices.user_features,
        item_features=matrices.item_features,
        sample_weight=matrices.weights,
        epochs=epochs,
        num_threads=params.num_threads,
    )


def _new(params: LightFMParams) -> LightFM:
    return LightFM(
        no_components=params.no_components,
        loss=params.loss,
        learning_rate=params.learning_rate,
        item_alpha=params.item_alpha,
        user_alpha=params.user_alpha,
        max_sampled=params.max_sampled,
        random_state=np.random.RandomState(params.random_state),
    )


def _fit(matrices: TrainingMatrices, params: LightFMParams) -> LightFM:
    model = _new(params)
    _fit_epochs(model, matrices, params, epochs=params.epochs)
    return model
