"""The stages as plain functions, without Prefect: extract -> validate -> features -> train ->
score -> publish on the ``tiny`` preset, against real DuckDB, GX, LightFM, MLflow and SQLite
(Kedro's "whole pipeline in memory" test, one assertion group per stage)."""

from __future__ import annotations

import os
import shutil
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import polars as pl
import pyarrow.parquet as pq
import pytest

from features.contracts import ContractError
from features.signal import SignalParams
from models.base import TrainingData
from models.baselines import PopularityParams
from models.ease import EASEParams
from models.lightfm_model import LightFMRecommender
from models.params import LightFMParams
from models.policy import GateParams
from pipelines.extract import extract
from pipelines.features import FeaturesReport, build_features
from pipelines.publish import publish
from pipelines.score import ScoreReport, score
from pipelines.sources.importers import import_movielens
from pipelines.sources.readers import FileSource
from pipelines.stores import Stores, lake, scored, warehouse
from pipelines.stores.tracking import Tracking, log_training_run, set_aliases
from pipelines.suites.events import ValidationThresholds
from pipelines.train import TrainReport, last_positive_users, train
from pipelines.validate import validate

AT = datetime(2030, 1, 1, tzinfo=UTC)
K = 5
PARAMS = LightFMParams(num_threads=1)
POPULARITY = PopularityParams()
SIGNAL = SignalParams()
HOLDOUT_DAYS = 4


@dataclass(frozen=True)
class World:
    stores: Stores
    tracking: Tracking


def _world(root: Path, landing: Path) -> World:
    shutil.copytree(landing, root / "landing")
    stores = Stores(
        root / "landing", root / "lake", root / "wh.duckdb", f"sqlite:///{root / 'serving.db'}"
    )
    tracking = Tracking(f"sqlite:///{root / 'mlflow.db'}", root / "artifacts", "exp", "recs")
    return World(stores, tracking)


def _prepare(
    world: World,
    as_of: datetime | None = None,
    min_warm_users: int = 0,
    signal: SignalParams = SIGNAL,
    truth: SignalParams | None = None,
) -> FeaturesReport:
    """Extract and validate the landing folder, then build features for ``as_of`` (default:
    midnight after the newest clean event)."""
    extract(world.stores, sources=[FileSource()], run_id="r", ingested_at=AT)
    validate(world.stores, run_id="r", now=AT, thresholds=ValidationThresholds())
    if as_of is None:
        latest = lake.latest_event_ts(world.stores.lake)
        as_of = latest.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    return build_features(
        world.stores, as_of=as_of, holdout_days=HOLDOUT_DAYS, top_k=K, signal=signal,
        popularity=POPULARITY, min_warm_users=min_warm_users, truth=truth,
    )  # fmt: skip


def _score(world: World, as_of: datetime, run_id: str) -> ScoreReport:
    return score(
        world.stores, world.tracking, k=K, popularity=POPULARITY, ease=EASEParams(),
        run_id=run_id, as_of=as_of, generated_at=AT, ttl=timedelta(hours=1), num_threads=1,
    )  # fmt: skip


def _train(world: World, as_of: datetime, manifest: str | None = None) -> TrainReport:
    return train(
        world.stores, world.tracking, params=PARAMS, signal=SIGNAL, popularity=POPULARITY,
        ease=EASEParams(), gate=GateParams(), k=K, run_id="t", as_of=as_of,
        window_start=as_of - timedelta(days=HOLDOUT_DAYS), manifest=manifest,
    )  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, tiny_landing: Path) -> World:
    return _world(tmp_path_factory.mktemp("stages"), tiny_landing)


@pytest.fixture(scope="module")
def features(world: World) -> FeaturesReport:
    return _prepare(world)


def test_score_without_a_champion_serves_popularity_to_everyone(
    world: World, features: FeaturesReport
) -> None:
    report = _score(world, features.as_of, "before-training")
    assert report.model_version == "popularity"
    # no plan yet: "model" for both segments, and no model: the popular list for everyone
    assert report.rows_by_source == {"popular": K * report.n_users}
    assert report.similar_items is None


def test_a_window_with_too_few_warm_users_adds_their_latest_positives_held_out(
    tmp_path: Path, tiny_landing: Path, world: World, features: FeaturesReport
) -> None:
    """Below ``min_warm_users`` warm window users, warm users the window does not reach are
    judged on their latest positives before it; the candidates never train on those pairs, the
    refit (the as-of tables) still does."""
    mine = _world(tmp_path, tiny_landing)
    report = _prepare(mine, features.as_of, min_warm_users=10**6)
    assert features.last_positive_users == 0  # the default: the window alone
    assert report.last_positive_users > 0
    (window,) = warehouse.read_tables(world.stores.warehouse, "holdout")
    inter, eval_inter, holdout = warehouse.read_tables(
        mine.stores.warehouse, "interactions", "eval_interactions", "holdout"
    )
    pairs = ["user_id", "item_id"]
    assert window.join(holdout, on=pairs, how="anti").height == 0  # the window's truth stays
    added = holdout.join(window, on=pairs, how="anti")
    assert added.height == holdout.height - window.height > 0
    assert added["user_id"].n_unique() == report.last_positive_users
    assert set(added["user_segment"]) == {"warm"}
    assert set(added["truth"]) == {"last_positives"}
    assert set(window["truth"]) == {"window"}
    assert last_positive_users(holdout) == report.last_positive_users
    assert last_positive_users(window) == 0
    assert not set(added["user_id"]) & set(window["user_id"])  # not judged twice
    assert added.join(eval_inter, on=pairs, how="semi").height == 0  # never trained on
    assert added.join(inter, on=pairs, how="semi").height == added.height  # refitted on
    # each such user keeps a history to be scored from
    assert set(added["user_id"]) <= set(eval_inter.filter(pl.col("positive"))["user_id"])


def test_a_tuned_rating_threshold_changes_what_is_learned_not_what_is_judged(
    tmp_path: Path, tiny_landing: Path, features: FeaturesReport
) -> None:
    """With a study's signal (3-star ratings are likes) and the configured one as ``truth``,
    the candidates train on more positives but the window's truth is the configured one's."""
    import gzip
    import json

    landing = tmp_path / "landing"
    shutil.copytree(tiny_landing, landing)
    # 3-star ratings alone (the synthetic ratings follow a view, a like either way): two in the
    # window (the 4 days before as_of), one before it.
    day = features.as_of - timedelta(days=2)
    lines = [
        {"event_id": f"x{n}", "user_id": user, "item_id": item, "event_type": "rating",
         "event_ts": (day - timedelta(days=back)).isoformat(), "value": 3.0, "session_id": None}
        for n, (user, item, back) in enumerate(
            [("u000001", "i00100", 0), ("u000002", "i00101", 0), ("u000003", "i00102", 6)]
        )
    ]  # fmt: skip
    extra = landing / "events" / f"events-{day:%Y-%m-%d}-late.jsonl.gz"
    extra.write_bytes(gzip.compress("".join(json.dumps(x) + "\n" for x in lines).encode()))
    mine = _world(tmp_path / "w", landing)
    tuned = SIGNAL.model_copy(update={"min_rating": 3.0})
    found = {}
    for name, signal, truth in (
        ("configured", SIGNAL, None), ("judged by tuned", tuned, None), ("tuned", tuned, SIGNAL),
    ):  # fmt: skip
        _prepare(mine, features.as_of, signal=signal, truth=truth)
        found[name] = warehouse.read_tables(mine.stores.warehouse, "holdout", "eval_interactions")
    assert found["tuned"][0].equals(found["configured"][0])  # judged on the same likes
    positives = {name: int(inter["positive"].sum()) for name, (_, inter) in found.items()}
    assert positives["tuned"] == positives["configured"] + 1  # trained on one more
    # the threshold judged by, too: the two 3-star ratings in the window become truth
    assert found["judged by tuned"][0].height == found["configured"][0].height + 2


@pytest.fixture(scope="module")
def trained(world: World, features: FeaturesReport) -> TrainReport:
    return _train(world, features.as_of, features.manifest)


def test_train_registers_and_promotes_a_model_that_beats_popularity(
    trained: TrainReport,
) -> None:
    report = trained
    assert report.model_version == "1"
    assert report.metrics["model_n_users"] > 0
    assert {"model_precision_at_5", "baseline_precision_at_5"} <= report.metrics.keys()
    # cold users are evaluated too, and their segment gets a recorded choice
    assert report.metrics["model_cold_n_users"] > 0
    assert report.metrics["model_warm_n_users"] > 0
    assert set(report.serving) == {"warm", "cold"}
    run = mlflow.get_run(report.mlflow_run_id)
    assert run.data.tags["decision"] == report.decision
    assert run.data.tags["serve_cold"] == report.serving["cold"]
    assert run.data.params["popularity_window_days"] == "14"
    assert int(run.data.params["epochs_chosen"]) == report.epochs <= PARAMS.epochs
    assert report.metrics["model_precision_at_5"] > report.metrics["baseline_precision_at_5"]
    assert report.promoted, report.decision


def test_the_training_run_is_what_a_reviewer_needs(
    world: World, features: FeaturesReport, trained: TrainReport
) -> None:
    """One MLflow run spans the training (the version is registered inside it); metrics at the
    five k for model, popularity and champion configuration, per segment, beyond accuracy; a
    curve over epochs; plots and a model card as artifacts and as the version's description;
    the ``challenger`` alias; a ``model_runs`` row; and params that rebuild the model."""
    from mlflow.tracking import MlflowClient

    from models.review import KS
    from pipelines.stores.tracking import load_version

    client = MlflowClient()
    run = client.get_run(trained.mlflow_run_id)
    version = client.get_model_version(world.tracking.model_name, trained.model_version)
    assert run.info.status == "FINISHED"
    assert run.info.start_time <= version.creation_timestamp <= run.info.end_time
    assert run.data.tags["as_of"] == features.as_of.isoformat()
    assert run.data.tags["features_manifest"] == features.manifest
    assert int(run.data.tags["lake_clean_files"]) > 0  # the lake files, checksummed
    assert run.data.tags["flow_run_id"] == "t"
    assert run.data.tags["gx_validation_run_id"] != "none"
    metrics = run.data.metrics
    for k in KS:
        for name in ("precision", "recall", "ndcg", "map", "hit", "coverage", "novelty"):
            assert f"model_{name}_at_{k}" in metrics
            assert f"baseline_{name}_at_{k}" in metrics
    for segment in ("warm", "cold", "light", "heavy"):
        assert f"model_{segment}_precision_at_10" in metrics
    assert 0 < metrics["model_coverage_at_100"] <= 1
    assert metrics["model_auc"] > metrics["baseline_auc"] > 0.5  # both rank likes above chance
    assert {"ease_auc", "popular_all_auc", "segment_country_auc"} <= metrics.keys()
    curve = client.get_metric_history(run.info.run_id, "validation_precision_at_5")
    assert [m.step for m in curve] == list(range(1, len(curve) + 1))
    assert len(curve) >= trained.epochs
    files = [f.path for f in client.list_artifacts(run.info.run_id, "review")]
    assert len([f for f in files if f.endswith(".png")]) >= 5
    assert {"review/model_card.md", "review/inputs.json"} <= set(files)
    assert "ease_precision_at_100" in metrics  # EASE, a serving candidate, is reviewed too
    assert "popular_all_ndcg_at_50" in metrics  # and every other baseline
    fit = client.get_metric_history(run.info.run_id, "train_precision_at_5")  # the loss proxy
    assert len(fit) == len(curve)
    description = version.description or ""
    assert description.startswith(f"# {world.tracking.model_name}, as of")
    assert "## Known limits" in description
    assert "| precision@10 | 0." in description  # with its interval: "0.1234 [0.1100, 0.1350]"
    assert description.split("| precision@10 | ", 1)[1].split(" |")[0].count("[") == 1
    assert set(version.aliases) == {"challenger", "champion"}
    copy = warehouse.read_copy_path(world.stores.warehouse)
    with warehouse.connect(copy, read_only=True) as con:
        rows = con.execute(
            "select model_version, promoted, decision from model_runs where mlflow_run_id = ?",
            [run.info.run_id],
        ).fetchall()
    assert rows == [(trained.model_version, trained.promoted, trained.decision)]
    # The run's params rebuild the registered model: same data, one thread, same seed.
    params = LightFMParams.model_validate_json(run.data.params["lightfm_params"])
    interactions, users, items = warehouse.read_tables(
        world.stores.warehouse, "interactions", "user_features", "item_features"
    )
    data = TrainingData(interactions.filter(pl.col("positive")), users, items, features.as_of)
    rebuilt = LightFMRecommender.fit(data, params)
    registered = load_version(world.tracking, trained.model_version).recommender
    assert isinstance(registered, LightFMRecommender)
    np.testing.assert_array_equal(rebuilt.item_embeddings, registered.item_embeddings)


def test_score_and_publish_with_the_champion(
    world: World, features: FeaturesReport, trained: TrainReport
) -> None:
    assert trained.promoted, trained.decision
    report = _score(world, features.as_of, "with-champion")
    assert report.model_version != "popularity"
    assert sum(report.rows_by_source.values()) == K * report.n_users
    assert report.similar_items is not None
    published = publish(world.stores, recommendations=report.path, clock=lambda: AT)
    assert (published.n_users, published.n_rows) == (report.n_users, K * report.n_users)
    assert published.model_version == report.model_version
    path = Path(world.stores.serving_url.removeprefix("sqlite:///"))
    with sqlite3.connect(path) as db:
        (rows,) = db.execute("select count(*) from recommendations").fetchone()
        (similar,) = db.execute("select count(*) from similar_items").fetchone()
    assert rows == K * report.n_users
    assert similar > 0
    # analysts see the published lists in the read copy, with item attributes and comments
    copy = warehouse.read_copy_path(world.stores.warehouse)
    with warehouse.connect(copy, read_only=True) as con:
        (n,) = con.execute("select count(*) from recommendations_with_items").fetchall()[0]
        comments = dict(
            con.execute(
                "select table_name, comment from duckdb_tables() where comment is not null"
            ).fetchall()
        )
    assert n == K * report.n_users
    assert comments["publications"].startswith("One row per publish")


def test_scored_lists_equal_a_brute_force_reference_under_business_rules(
    world: World, features: FeaturesReport, trained: TrainReport
) -> None:
    """Every model-served list equals a full sort of the champion's scores (boosted new items,
    ties by the model's item order) after removing seen, blocked, unavailable and excluded
    items, with the category cap applied greedily; and the rules hold on every list."""
    import numpy as np
    import polars as pl

    from models.rules import ListRules, item_rules
    from pipelines.stores.tracking import load_champion

    interactions, users, items = warehouse.read_tables(
        world.stores.warehouse, "interactions", "user_features", "item_features"
    )
    categories = items["category"].unique().sort().to_list()
    rules = ListRules(
        excluded_categories=[categories[0]], max_per_category=2, new_item_days=2,
        new_item_boost=0.25,
    )  # fmt: skip
    blocked_user, blocked_item = users["user_id"][0], items["item_id"][0]
    with warehouse.connect(world.stores.warehouse) as con:
        con.execute("drop table if exists blocklist")
        con.execute(
            "create table blocklist as select ? as user_id, ? as item_id",
            [blocked_user, blocked_item],
        )
    try:
        report = score(
            world.stores, world.tracking, k=K, popularity=POPULARITY, ease=EASEParams(),
            run_id="rules", as_of=features.as_of, rules=rules, plan_run_id="no-plan",
            generated_at=AT, ttl=timedelta(hours=1), num_threads=2, chunk_users=64,
        )  # fmt: skip
    finally:
        with warehouse.connect(world.stores.warehouse) as con:
            con.execute("drop table blocklist")
    lists = pl.read_parquet(report.path / "recommendations.parquet")
    model = load_champion(world.tracking)
    assert model is not None
    recommender = model.recommender
    assert isinstance(recommender, LightFMRecommender)
    users = users.sort("user_id")
    vectors, _ = recommender.user_vectors(users)
    scores = vectors @ recommender.item_vectors().T
    resolved = item_rules(items, rules, features.as_of)
    aligned = resolved.aligned(recommender.item_ids)
    assert aligned.boost is not None  # the rule is exercised
    assert aligned.category is not None
    scores = scores + aligned.boost
    item_index = {item: j for j, item in enumerate(recommender.item_ids.to_list())}
    allowed = items.filter(pl.col("available") & (pl.col("category") != categories[0]))[
        "item_id"
    ].to_list()
    seen = set(interactions.select("user_id", "item_id").iter_rows()) | {
        (blocked_user, blocked_item)
    }
    category = dict(zip(items["item_id"], items["category"], strict=True))
    checked = 0
    for u, (user,) in enumerate(users.select("user_id").iter_rows()):
        mine = lists.filter(pl.col("user_id") == user).sort("rank")
        assert mine.height == K
        assert all(category[i] != categories[0] for i in mine["item_id"])
        if set(mine["source"]) - {"model", "cold_start"}:
            continue  # topped up from popularity: not the model's list alone
        shown = [category[i] for i in mine["item_id"]]
        assert max(shown.count(c) for c in shown) <= 2
        ranked = sorted(
            (j for i in allowed if (user, i) not in seen for j in [item_index[i]]),
            key=lambda j: (-scores[u, j], j),
        )
        taken: list[str] = []
        per_category: dict[str, int] = {}
        for j in ranked:
            item = recommender.item_ids[j]
            if per_category.get(category[item], 0) == 2:
                continue
            per_category[category[item]] = per_category.get(category[item], 0) + 1
            taken.append(item)
            if len(taken) == K:
                break
        assert mine["item_id"].to_list() == taken, user
        np.testing.assert_allclose(
            mine["score"].to_numpy(), [scores[u, item_index[i]] for i in taken], rtol=1e-5
        )
        checked += 1
    assert checked > users.height // 2
    assert blocked_item not in lists.filter(pl.col("user_id") == blocked_user)["item_id"]


def test_scored_lists_are_the_recommenders_own_lists_topped_up_from_popularity(
    world: World, features: FeaturesReport, trained: TrainReport
) -> None:
    """The stage holds lists as item codes from the kernel to the writer; its rows are those of
    the frame API: the champion's ``recommend`` for the users it describes, and for every list
    shorter than K (here all of them: one item per category) ``fill_to_k`` from the popular
    list, with the same exclusions, rules and sources."""
    from models.baselines import PopularityRecommender
    from models.policy import fill_to_k
    from models.rules import ListRules, item_rules
    from pipelines.stores.tracking import load_champion

    interactions, users, items = warehouse.read_tables(
        world.stores.warehouse, "interactions", "user_features", "item_features"
    )
    categories = items["category"].unique().sort().to_list()
    kept = categories[-3:]  # three categories, one item each: every model list is short
    rules = ListRules(excluded_categories=categories[:-3], max_per_category=1)
    report = score(
        world.stores, world.tracking, k=K, popularity=POPULARITY, ease=EASEParams(),
        run_id="coded", as_of=features.as_of, rules=rules, plan_run_id="no-plan",
        generated_at=AT, ttl=timedelta(hours=1), num_threads=2, chunk_users=48,
    )  # fmt: skip
    got = pl.read_parquet(report.path / "recommendations.parquet")
    champion = load_champion(world.tracking)
    assert champion is not None
    model = champion.recommender
    users = users.sort("user_id")
    seen = interactions.select("user_id", "item_id")
    available = items.filter(pl.col("available") & pl.col("category").is_in(kept))["item_id"]
    described = users.filter(pl.Series(model.describes(users)))
    primary = model.recommend(
        described, K, exclude=seen, allowed_items=available,
        rules=item_rules(items, rules, features.as_of),
    )  # fmt: skip
    data = TrainingData(interactions.filter(pl.col("positive")), users, items, features.as_of)
    popular = PopularityRecommender.fit(data, POPULARITY).recommend(
        users.select("user_id"), K, exclude=seen, allowed_items=available
    )
    expected = fill_to_k(primary, popular, K)
    columns = ["user_id", "rank", "item_id", "source"]
    assert got.select(columns).rows() == expected.select(columns).rows()
    np.testing.assert_allclose(got["score"].to_numpy(), expected["score"].to_numpy(), rtol=1e-6)
    assert {"popular", "model"} <= set(got["source"])


def test_the_pyfunc_by_alias_gives_the_lists_the_pipeline_scores(
    world: World, features: FeaturesReport, trained: TrainReport
) -> None:
    """Any MLflow client loading ``models:/<name>@champion`` gets the lists the score stage
    serves: for users without history (nothing seen to leave out), the pyfunc's list without
    the unavailable items is the published one."""
    import polars as pl

    assert trained.promoted
    report = score(
        world.stores, world.tracking, k=K, popularity=POPULARITY, ease=EASEParams(),
        run_id="pyfunc", as_of=features.as_of, plan_run_id="no-plan", generated_at=AT,
        ttl=timedelta(hours=1), num_threads=1,
    )  # fmt: skip
    lists = pl.read_parquet(report.path / "recommendations.parquet")
    interactions, users, items = warehouse.read_tables(
        world.stores.warehouse, "interactions", "user_features", "item_features"
    )
    cold = users.join(interactions.select("user_id").unique(), on="user_id", how="anti")
    served = lists.filter(pl.col("source") == "cold_start")
    cold = cold.filter(pl.col("user_id").is_in(served["user_id"].unique().implode()))
    assert cold.height > 0
    unavailable = set(items.filter(~pl.col("available"))["item_id"])
    model = mlflow.pyfunc.load_model(f"models:/{world.tracking.model_name}@champion")
    columns = [c for c in cold.columns if users.schema[c] == pl.String]  # user_id first
    out = model.predict(cold.select(columns).to_pandas(), params={"k": K + len(unavailable)})
    for user, rows in out.groupby("user_id"):
        mine = [i for i in rows.sort_values("rank")["item_id"] if i not in unavailable][:K]
        published = served.filter(pl.col("user_id") == user).sort("rank")["item_id"].to_list()
        assert mine == published, user


def test_publish_refuses_lists_changed_after_validation(
    world: World, features: FeaturesReport
) -> None:
    report = _score(world, features.as_of, "to-tamper")
    lists = report.path / "recommendations.parquet"
    table = pq.read_table(lists)
    pq.write_table(table.slice(1), lists)  # one row gone after the suite passed
    with pytest.raises(ContractError, match="changed since scoring"):
        publish(world.stores, recommendations=report.path, clock=lambda: AT)


def test_a_score_run_killed_between_its_outputs_is_never_published(
    world: World, features: FeaturesReport, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kill after the lists are renamed into place but before the manifest: the run's folder
    holds a complete-looking file, and publishing it is refused; ``latest_scored`` never picks
    it (whatever its files' times)."""
    committed = _score(world, features.as_of, "committed")
    real_replace = os.replace

    def kill_at_manifest(src: str | Path, dst: str | Path) -> None:
        if Path(dst).name == "manifest.json":
            raise KeyboardInterrupt("killed")
        real_replace(src, dst)

    monkeypatch.setattr("pipelines.stores.scored.os.replace", kill_at_manifest)
    with pytest.raises(KeyboardInterrupt):
        _score(world, features.as_of, "killed")
    monkeypatch.undo()
    killed = scored.scored_dir(world.stores.lake, "killed")
    assert (killed / "recommendations.parquet").exists()
    with pytest.raises(ContractError, match="did not finish"):
        publish(world.stores, recommendations=killed, clock=lambda: AT)
    assert scored.latest_scored(world.stores.lake) != killed
    assert (committed.path / "manifest.json").exists()
    assert not list(killed.glob(".*.tmp"))


@pytest.mark.slow
def test_champion_from_movielens_reads_its_own_attributes_for_new_users(
    tmp_path: Path, ml100k: Path
) -> None:
    """The MLflow signature comes from the model: a MovieLens champion loaded by any MLflow
    client sees ``gender`` and ``occupation`` of a user it never saw, and lists differ by them."""
    import_movielens(ml100k, tmp_path / "ml-landing")
    world = _world(tmp_path / "w", tmp_path / "ml-landing")
    features = _prepare(world)
    interactions, users, items = warehouse.read_tables(
        world.stores.warehouse, "interactions", "user_features", "item_features"
    )
    data = TrainingData(interactions, users, items, features.as_of)
    fitted = LightFMRecommender.fit(data, LightFMParams(epochs=10, num_threads=1))
    logged = log_training_run(
        world.tracking, fitted, run_name="ml", params={}, metrics={}, tags={}, promote=True
    )
    set_aliases(world.tracking, logged.version, propose=True, promote=True)
    model = mlflow.pyfunc.load_model("models:/recs@champion")
    inputs = {spec.name for spec in model.metadata.get_input_schema().inputs}
    assert {"user_id", "gender", "occupation"} <= inputs
    new = pd.DataFrame(
        {"user_id": ["new-a", "new-b"], "gender": ["F", "M"], "occupation": ["artist", "engineer"]}
    )
    out = model.predict(new, params={"k": 10})
    lists = out.groupby("user_id")["item_id"].apply(list).to_dict()
    assert set(out["source"]) == {"cold_start"}
    assert lists["new-a"] != lists["new-b"]


def _truncated_landing(src: Path, dst: Path, before: datetime) -> None:
    """``src`` with every event line at or after ``before`` removed (lines that are not JSON or
    have no readable time are kept: extraction rejects them either way)."""
    import gzip
    import json

    shutil.copytree(src, dst)
    for path in (dst / "events").glob("*.jsonl.gz"):
        kept = []
        for line in gzip.decompress(path.read_bytes()).decode().splitlines():
            try:
                ts = datetime.fromisoformat(str(json.loads(line)["event_ts"]))
            except (ValueError, KeyError, TypeError):
                kept.append(line)
                continue
            if ts.tzinfo is None or ts < before:
                kept.append(line)
        path.write_bytes(gzip.compress(("\n".join(kept) + "\n").encode(), mtime=0))


def _published(world: World) -> dict[str, list[tuple[object, ...]]]:
    path = Path(world.stores.serving_url.removeprefix("sqlite:///"))
    queries = {
        "recommendations": "select user_id, rank, item_id, score, source from recommendations",
        "popular_items": "select segment, rank, item_id, score from popular_items",
        "similar_items": "select item_id, rank, similar_item_id, score from similar_items",
    }
    with sqlite3.connect(path) as db:
        return {name: sorted(db.execute(sql).fetchall()) for name, sql in queries.items()}


def _night(world: World, as_of: datetime) -> tuple[FeaturesReport, TrainReport]:
    features = _prepare(world, as_of)
    trained = _train(world, as_of)
    scored = _score(world, as_of, "night")
    publish(world.stores, recommendations=scored.path, clock=lambda: AT)
    return features, trained


@pytest.mark.slow
def test_backfill_publishes_what_the_truncated_history_would(
    tmp_path: Path, tiny_landing: Path
) -> None:
    """A run for a past night on the full history equals a run on the history cut at that night:
    every feature table, the decision, and every published table (one thread, fixed seed)."""
    night = datetime(2026, 10, 11, tzinfo=UTC)  # the tiny preset runs 2026-10-01 .. 10-14
    full = _world(tmp_path / "full", tiny_landing)
    _truncated_landing(tiny_landing, tmp_path / "cut-landing", night)
    cut = _world(tmp_path / "cut", tmp_path / "cut-landing")
    full_features, full_train = _night(full, night)
    cut_features, cut_train = _night(cut, night)
    assert lake.latest_event_ts(full.stores.lake) >= night + timedelta(days=2)  # it had more
    assert full_features.rows == cut_features.rows
    names = [*full_features.rows]
    for a, b in zip(
        warehouse.read_tables(full.stores.warehouse, *names),
        warehouse.read_tables(cut.stores.warehouse, *names),
        strict=True,
    ):
        assert a.equals(b)
    assert (full_train.decision, full_train.serving, full_train.epochs) == (
        cut_train.decision, cut_train.serving, cut_train.epochs,
    )  # fmt: skip
    assert full_train.metrics == cut_train.metrics
    assert _published(full) == _published(cut)


@pytest.mark.postgres
def test_a_password_in_the_serving_url_is_never_stored_or_shown(
    world: World, features: FeaturesReport, trained: TrainReport, postgres_url: str
) -> None:
    import dataclasses

    from flows.summaries import nightly

    secret = "s3cret-pw"
    url = postgres_url.replace("://root@", f"://root:{secret}@")  # trust auth ignores it
    assert secret in url
    stores = dataclasses.replace(world.stores, serving_url=url)
    report = _score(world, features.as_of, "password")
    published = publish(stores, recommendations=report.path, clock=lambda: AT)
    assert published.serving_url == url.replace(secret, "***")
    assert secret not in nightly({"publish": published})
    with warehouse.connect(world.stores.warehouse, read_only=True) as con:
        tables = [str(r[0]) for r in con.execute("show tables").fetchall()]
        for table in tables:
            dump = con.sql(f'select * from "{table}"').fetchall()
            assert secret not in repr(dump), table


def test_a_champion_differing_in_epochs_only_is_the_challengers_training_at_its_epoch(
    tmp_path: Path, tiny_landing: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The champion's configuration is scored on the window; when it is the challenger's but
    for the epoch count (early stopping chose another one another night), it comes from the
    challenger's epoch-by-epoch training (equal to a fit from scratch with one thread, see
    ``test_early_stopping_returns_the_fits_of_its_best_and_of_another_epoch``): the only fit
    from scratch left is the refit on every event before ``as_of``."""
    world = _world(tmp_path, tiny_landing)
    report = _prepare(world)
    interactions, users, items = warehouse.read_tables(
        world.stores.warehouse, "interactions", "user_features", "item_features"
    )
    data = TrainingData(interactions.filter(pl.col("positive")), users, items, report.as_of)
    champion_params = PARAMS.model_copy(update={"epochs": PARAMS.epochs + 3, "patience": None})
    logged = log_training_run(
        world.tracking, LightFMRecommender.fit(data, champion_params), run_name="champion",
        params={}, metrics={}, tags={}, promote=True,
    )  # fmt: skip
    set_aliases(world.tracking, logged.version, propose=True, promote=True)
    fits: list[int] = []
    real = LightFMRecommender.from_matrices.__func__  # type: ignore[attr-defined]

    def counted(cls: type[LightFMRecommender], *args: object) -> LightFMRecommender:
        fits.append(1)
        return real(cls, *args)  # type: ignore[no-any-return]

    monkeypatch.setattr(LightFMRecommender, "from_matrices", classmethod(counted))
    trained = _train(world, report.as_of)
    assert "champion_precision_at_5" in trained.metrics  # it was scored on the window
    assert trained.epochs != champion_params.epochs
    assert len(fits) == 1  # the refit only (the champion's configuration was a second one)


def test_excluded_pairs_are_the_interactions_then_the_new_blocked_pairs_each_once() -> None:
    """Interactions first (one row per pair); a blocked pair already interacted with, or
    blocked twice, appears once; an empty blocklist adds nothing."""
    from pipelines.score import _excluded_pairs

    interactions = pl.DataFrame(
        {"user_id": ["u1", "u1", "u2"], "item_id": ["a", "b", "a"], "weight": [1.0, 2.0, 1.0]}
    )
    blocklist = pl.DataFrame({"user_id": ["u1", "u2", "u2", "u3"], "item_id": ["a", "c", "c", "a"]})
    got = _excluded_pairs(interactions, blocklist)
    assert got.rows()[:3] == [("u1", "a"), ("u1", "b"), ("u2", "a")]
    assert sorted(got.rows()[3:]) == [("u2", "c"), ("u3", "a")]
    empty = blocklist.clear()
    assert _excluded_pairs(interactions, empty).rows() == [("u1", "a"), ("u1", "b"), ("u2", "a")]


def test_coded_pairs_mark_warm_users_by_their_events_not_by_blocked_pairs() -> None:
    """A user is warm by an interaction, even one on an item the catalog no longer has; a
    blocked pair alone leaves them cold. Pairs of unknown users or items are dropped."""
    from pipelines.score import _coded_pairs, _excluded_pairs

    interactions = pl.DataFrame({"user_id": ["u1", "u2", "ghost"], "item_id": ["a", "gone", "a"]})
    blocklist = pl.DataFrame({"user_id": ["u3", "u1"], "item_id": ["b", "b"]})
    excluded = _excluded_pairs(interactions, blocklist)
    users, items = pl.Series(["u1", "u2", "u3"]), pl.Series(["a", "b"])
    matrix, warm = _coded_pairs(excluded, interactions.height, users, items)
    assert warm.tolist() == [True, True, False]
    assert matrix.toarray().tolist() == [[1, 1], [0, 0], [0, 1]]
