"""The contract every recommender passes: deterministic with a seed and one thread, round-trips
through save/load, handles unknown users, emits k rows per user with ranks 1..k, no duplicates and
no excluded item. Plus: the hybrid model learns structure the baseline cannot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from features.contracts import RECOMMENDATION_SOURCES
from features.matrices import training_matrices
from models.base import Recommender, TrainingData
from models.baselines import PopularityRecommender
from models.ease import EASEParams, EASERecommender, closed_form
from models.evaluate import ranking_metrics
from models.lightfm_model import LightFMRecommender, train_lightfm, train_with_early_stopping
from models.params import LightFMParams
from models.pyfunc import load_recommender

N_USERS, N_ITEMS = 60, 30


def _data(seed: int = 0) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Two taste groups: even users (country US) like items 0..14, odd users (DE) 15..29."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(N_USERS):
        lo = 0 if u % 2 == 0 else 15
        for i in rng.choice(np.arange(lo, lo + 15), 6, replace=False):
            rows.append((f"u{u}", f"i{i}", 1.0))
        rows.append((f"u{u}", "i0", 1.0))  # i0 is popular with everyone
    interactions = pl.DataFrame(rows, schema=["user_id", "item_id", "weight"], orient="row")
    interactions = interactions.unique(subset=["user_id", "item_id"], maintain_order=True)
    users = pl.DataFrame(
        {
            "user_id": [f"u{u}" for u in range(N_USERS)] + ["new_us"],
            "country": ["US" if u % 2 == 0 else "DE" for u in range(N_USERS)] + ["US"],
            "age_band": [None] * (N_USERS + 1),
            "device": [None] * (N_USERS + 1),
        },
        schema_overrides={"age_band": pl.String, "device": pl.String},
    )
    items = pl.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(N_ITEMS)],
            "category": ["a" if i < 15 else "b" for i in range(N_ITEMS)],
            "brand": [None] * N_ITEMS,
            "price_band": [None] * N_ITEMS,
            "tags": [[] for _ in range(N_ITEMS)],
        },
        schema_overrides={"brand": pl.String, "price_band": pl.String, "tags": pl.List(pl.String)},
    )
    return interactions, users, items


PARAMS = LightFMParams(no_components=8, epochs=15, num_threads=1, random_state=7)


def _lightfm() -> LightFMRecommender:
    inter, users, items = _data()
    return LightFMRecommender.fit(TrainingData(inter, users, items), PARAMS)


def _popularity() -> PopularityRecommender:
    inter, users, items = _data()
    return PopularityRecommender.fit(TrainingData(inter, users, items))


def _users(*ids: str) -> pl.DataFrame:
    users = _data()[1]
    known = users.filter(pl.col("user_id").is_in(list(ids)))
    unknown = [i for i in ids if i not in known["user_id"].to_list()]
    extra = pl.DataFrame({"user_id": unknown}).with_columns(
        pl.lit(None, pl.String).alias(c) for c in ("country", "age_band", "device")
    )
    return pl.concat([known, extra])


class RecommenderContract:
    """The checks every :class:`models.base.Recommender` passes (LensKit's
    ``BasicComponentTests``): a test class per model inherits them and says how to fit one."""

    def make(self) -> Recommender:
        raise NotImplementedError

    def test_deterministic_with_seed_and_one_thread(self) -> None:
        users = _users("u0", "u1", "u2")
        assert self.make().recommend(users, 5).equals(self.make().recommend(users, 5))

    def test_round_trips_through_save_and_load(self, tmp_path: Path) -> None:
        model = self.make()
        loaded = load_recommender(model.save(tmp_path / "m"))
        assert type(loaded) is type(model)
        users = _users("u0", "u1", "new_us")
        assert loaded.recommend(users, 5).equals(model.recommend(users, 5))
        assert loaded.similar_items(3).equals(model.similar_items(3))

    def test_k_rows_per_user_ranks_one_to_k_no_duplicates_no_excluded(self) -> None:
        inter = _data()[0]
        users = _users("u0", "u1", "u7", "new_us", "stranger")
        recs = self.make().recommend(users, 5, exclude=inter)
        per_user = recs.group_by("user_id").agg(
            pl.len(), pl.col("rank").sort(), pl.col("item_id").n_unique()
        )
        assert sorted(per_user["user_id"]) == sorted(users["user_id"])
        assert per_user["len"].to_list() == [5] * users.height
        assert all(r.to_list() == [1, 2, 3, 4, 5] for r in per_user["rank"])
        assert per_user["item_id"].to_list() == [5] * users.height
        seen = recs.join(inter, on=["user_id", "item_id"], how="inner")
        assert seen.height == 0
        assert set(recs["source"]) <= set(RECOMMENDATION_SOURCES)

    def test_allowed_items_restricts_the_lists(self) -> None:
        allowed = pl.Series([f"i{i}" for i in range(10)])
        recs = self.make().recommend(_users("u0", "u1"), 4, allowed_items=allowed)
        assert set(recs["item_id"]) <= set(allowed)

    def test_similar_items_k_per_item_never_itself_only_allowed(self) -> None:
        allowed = pl.Series([f"i{i}" for i in range(5)])
        similar = self.make().similar_items(2, allowed_items=allowed)
        assert similar.columns == ["item_id", "rank", "similar_item_id", "score"]
        assert similar.group_by("item_id").len()["len"].to_list() == [2] * N_ITEMS
        assert (similar["item_id"] != similar["similar_item_id"]).all()
        assert set(similar["similar_item_id"]) <= set(allowed)

    def test_describes_one_flag_per_user_and_names_its_attributes(self) -> None:
        model = self.make()
        users = _users("u0", "new_us", "stranger")
        assert model.describes(users).shape == (3,)
        assert set(model.user_attributes()) <= {"country", "age_band", "device"}


class TestLightFM(RecommenderContract):
    def make(self) -> Recommender:
        return _lightfm()


class TestPopularity(RecommenderContract):
    def make(self) -> Recommender:
        return _popularity()


class TestEASE(RecommenderContract):
    def make(self) -> Recommender:
        inter, users, items = _data()
        return EASERecommender.fit(TrainingData(inter, users, items), EASEParams(l2=10.0))


def test_ease_recommends_the_users_taste_group() -> None:
    inter, users, items = _data()
    model = EASERecommender.fit(TrainingData(inter, users, items), EASEParams(l2=10.0))
    recs = model.recommend(_users("u0", "u1"), 5, exclude=inter)
    group = recs.with_columns(
        low=pl.col("item_id").str.slice(1).cast(int) < 15, even=pl.col("user_id") == "u0"
    )
    assert group.select((pl.col("low") == pl.col("even")).mean()).item() == 1.0
    assert model.describes(_users("u0", "new_us")).tolist() == [True, False]


def test_ease_weights_are_the_closed_form_and_load_in_c_order(tmp_path: Path) -> None:
    inter, users, items = _data()
    model = EASERecommender.fit(TrainingData(inter, users, items), EASEParams(l2=10.0))
    x = np.zeros((model.user_ids.len(), model.item_ids.len()))
    u = {v: n for n, v in enumerate(model.user_ids)}
    i = {v: n for n, v in enumerate(model.item_ids)}
    for user, item in inter.select("user_id", "item_id").iter_rows():
        x[u[user], i[item]] = 1.0
    p = np.linalg.inv(x.T @ x + 10.0 * np.eye(x.shape[1]))
    b = -p / np.diag(p)
    np.fill_diagonal(b, 0.0)
    np.testing.assert_allclose(model.weights, b, atol=1e-5)
    loaded = EASERecommender.load(model.save(tmp_path / "ease"))
    assert loaded.weights.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(loaded.weights, model.weights)
    with pytest.raises(ValueError, match="not positive definite"):
        closed_form(np.array([[1.0, 2.0], [2.0, 1.0]], np.float32))


@pytest.mark.parametrize("also_epoch", [3, 6])
def test_early_stopping_returns_the_fits_of_its_best_and_of_another_epoch(also_epoch: int) -> None:
    # Scripted validation: best at epoch 2, no better for patience 2, so it stops after 4.
    # With one thread, the best model and the model at ``also_epoch`` (inside the loop, or
    # trained on past the stop) equal fits from scratch of that many epochs.
    inter, users, items = _data()
    matrices = training_matrices(inter, users, items)
    params = PARAMS.model_copy(update={"epochs": 10, "patience": 2, "num_threads": 1})
    scripted = iter([0.1, 0.3, 0.2, 0.2, 0.9, 0.9])
    stopped = train_with_early_stopping(
        matrices, params, lambda _: next(scripted), also_epoch=also_epoch
    )
    assert (stopped.epochs, stopped.curve) == (2, [0.1, 0.3, 0.2, 0.2])
    for model, epochs in ((stopped.model, 2), (stopped.at_epoch, also_epoch)):
        assert model is not None
        scratch = train_lightfm(matrices, params.model_copy(update={"epochs": epochs}))
        assert model.params.epochs == epochs
        np.testing.assert_array_equal(model.item_embeddings, scratch.item_embeddings)
        np.testing.assert_array_equal(
            model.user_feature_embeddings, scratch.user_feature_embeddings
        )
    assert train_with_early_stopping(matrices, params, lambda _: 0.5).at_epoch is None


def test_popularity_ranks_by_distinct_users_ties_by_item_id() -> None:
    inter = pl.DataFrame(
        {"user_id": ["a", "b", "a", "c", "b"], "item_id": ["x", "x", "y", "z", "z"]}
    ).with_columns(weight=pl.lit(1.0))
    items = pl.DataFrame({"item_id": ["w", "x", "y", "z"]})
    model = PopularityRecommender.fit(TrainingData(inter, pl.DataFrame(), items))
    recs = model.recommend(pl.DataFrame({"user_id": ["a"]}), 4)
    assert recs.select("rank", "item_id", "score").rows() == [
        (1, "x", 2 / 3),  # shares of the 3 active users
        (2, "z", 2 / 3),
        (3, "y", 1 / 3),
        (4, "w", 0.0),
    ]


def test_unknown_users_get_cold_start_from_attributes() -> None:
    recs = _lightfm().recommend(_users("u0", "new_us", "stranger"), 5)
    sources = dict(recs.group_by("user_id").agg(pl.col("source").first()).iter_rows())
    assert sources == {"u0": "model", "new_us": "cold_start", "stranger": "cold_start"}
    # a new US user is recommended mostly the US group's items (0..14), from attributes alone
    new_us = recs.filter(pl.col("user_id") == "new_us")["item_id"].str.slice(1).cast(int)
    assert (new_us < 15).sum() >= 4


def test_hybrid_model_beats_popularity_on_held_out_pairs() -> None:
    inter, users, items = _data(seed=0)
    rng = np.random.default_rng(1)
    mask = rng.random(inter.height) < 0.2
    train, test = inter.filter(~pl.Series(mask)), inter.filter(pl.Series(mask))
    model = train_lightfm(training_matrices(train, users, items), PARAMS)
    pop = PopularityRecommender.fit(TrainingData(train, users, items))
    test_users = users.filter(pl.col("user_id").is_in(test["user_id"].unique().implode()))
    p_model = ranking_metrics(model.recommend(test_users, 5, exclude=train), test, 5)
    p_pop = ranking_metrics(pop.recommend(test_users, 5, exclude=train), test, 5)
    assert p_model["precision_at_5"] > 1.5 * p_pop["precision_at_5"]


def test_describes_users_with_history_or_known_attributes_only() -> None:
    model = _lightfm()
    users = _users("u0", "new_us", "stranger")
    assert model.describes(users).tolist() == [True, True, False]
    assert model.user_attributes() == ["country"]


def test_similar_items_come_from_the_same_taste_group() -> None:
    similar = _lightfm().similar_items(3)
    assert similar.columns == ["item_id", "rank", "similar_item_id", "score"]
    assert similar.height == 3 * N_ITEMS
    assert (similar["item_id"] != similar["similar_item_id"]).all()
    group = pl.col("item_id").str.slice(1).cast(int) < 15
    same = group == (pl.col("similar_item_id").str.slice(1).cast(int) < 15)
    assert similar.select(same.mean()).item() > 0.8
    allowed = pl.Series([f"i{i}" for i in range(5)])
    limited = _lightfm().similar_items(2, allowed_items=allowed)
    assert set(limited["similar_item_id"]) <= set(allowed)
