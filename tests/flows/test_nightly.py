"""The nightly flow end to end on the ``tiny`` preset, every stage real (Prefect, GX, DuckDB,
LightFM, MLflow, SQLite), under the session's one Prefect harness."""

from __future__ import annotations

import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from features.contracts import RECOMMENDATION_SOURCES

pytestmark = pytest.mark.slow

AS_OF = datetime(2026, 10, 15, tzinfo=UTC)  # the night after the tiny preset's last day


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, tiny_landing: Path) -> dict[str, str]:
    root = tmp_path_factory.mktemp("nightly")
    shutil.copytree(tiny_landing, root / "landing")
    return {
        "RECS_DATA_DIR": str(root),
        "RECS_MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "RECS_MLFLOW_ARTIFACTS_DIR": str(root / "artifacts"),
        "RECS_HOLDOUT_DAYS": "4",
        "RECS_NUM_THREADS": "1",  # the rerun test compares two trainings exactly
        # tiny has 120 items: 10 keeps every list full (lists shorter than K where the catalog
        # runs out are covered by the suite's and the stage's tests)
        "RECS_SERVING_K": "10",
    }


SETTINGS_BUILT: list[int] = []


@pytest.fixture(scope="module")
def first_run(env: dict[str, str], prefect_harness: None) -> dict[str, Any]:
    import flows.nightly
    from flows.settings import Settings

    def counted() -> Settings:
        SETTINGS_BUILT.append(1)
        return Settings()

    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        mp.setattr(flows.nightly, "Settings", counted)
        return flows.nightly.nightly_flow(as_of=AS_OF)


def test_settings_are_read_once_per_nightly_run(first_run: dict[str, Any]) -> None:
    assert len(SETTINGS_BUILT) == 1


def _serving(env: dict[str, str]) -> sqlite3.Connection:
    return sqlite3.connect(Path(env["RECS_DATA_DIR"]) / "serving.sqlite")


def test_every_record_is_accounted_for(first_run: dict[str, Any], tiny_landing: Path) -> None:
    import gzip

    lines = sum(
        len(gzip.decompress(p.read_bytes()).splitlines())
        for p in (tiny_landing / "events").glob("*.jsonl.gz")
    )
    ex, va = first_run["extract"], first_run["validate"]
    assert ex.rows_read == lines == ex.rows_written + ex.rows_rejected
    assert va.rows_in == ex.rows_written == va.rows_clean + va.rows_quarantined
    assert ex.rows_rejected > 0
    assert va.rows_quarantined > 0
    assert set(ex.rejected_by_reason) == {"malformed_json", "unparseable_timestamp"}
    assert va.data_docs is not None
    assert Path(va.data_docs).exists()
    assert set(va.quarantined_by_reason) == {
        "missing_user_id", "missing_item_id", "unknown_event_type", "future_timestamp",
        "negative_value", "duplicate_event_id", "unknown_item",
    }  # fmt: skip


def test_serving_table_has_k_unseen_items_for_every_user_with_history(
    first_run: dict[str, Any], env: dict[str, str]
) -> None:
    as_of = first_run["features"].as_of
    lake = Path(env["RECS_DATA_DIR"]) / "lake" / "clean" / "events" / "dt=[0-9]*" / "*.parquet"
    con = duckdb.connect()
    con.execute("set TimeZone = 'UTC'")
    history = {
        u for (u,) in con.execute(
            "select distinct user_id from read_parquet(?) where event_ts < ?", [str(lake), as_of]
        ).fetchall()
    }  # fmt: skip
    seen = set(
        con.execute("select distinct user_id, item_id from read_parquet(?)", [str(lake)]).fetchall()
    )
    with _serving(env) as db:
        rows = db.execute("select user_id, rank, item_id, source from recommendations").fetchall()
    per_user: dict[str, list[int]] = {}
    for user, rank, _, _ in rows:
        per_user.setdefault(user, []).append(rank)
    assert history <= per_user.keys()
    assert all(sorted(r) == list(range(1, 11)) for r in per_user.values())
    assert not [(u, i) for u, _, i, _ in rows if (u, i) in seen]
    with _serving(env) as db:
        n_items, n_rows = db.execute(
            "select count(distinct item_id), count(*) from similar_items"
        ).fetchone()
    assert n_items > 0
    assert n_rows == 10 * n_items
    assert {s for *_, s in rows} <= set(RECOMMENDATION_SOURCES)


def test_mlflow_holds_the_run_metrics_and_champion(
    first_run: dict[str, Any], env: dict[str, str]
) -> None:
    from mlflow.tracking import MlflowClient

    train = first_run["train"]
    client = MlflowClient(tracking_uri=env["RECS_MLFLOW_TRACKING_URI"])
    run = client.get_run(train.mlflow_run_id)
    for who in ("model", "baseline"):
        for metric in ("precision_at_10", "recall_at_10", "ndcg_at_10"):
            assert f"{who}_{metric}" in run.data.metrics
    assert run.data.params["lightfm_loss"] == "warp"
    # how many warm users the features stage judged on their latest positives (a thin window)
    assert run.data.params["n_last_positive_users"] == str(
        first_run["features"].last_positive_users
    )
    # the reviewer can go from the MLflow run to the Prefect flow run that trained it
    url = run.data.tags.get("prefect_flow_run_url")
    assert url is None or (url.startswith("http") and run.data.tags["flow_run_id"] in url)
    assert train.promoted, train.decision
    champion = client.get_model_version_by_alias("recs-lightfm", "champion")
    assert str(champion.version) == train.model_version == first_run["publish"].model_version


def test_rerun_is_idempotent_and_reuses_the_champion_without_training(
    first_run: dict[str, Any], env: dict[str, str]
) -> None:
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        from flows.nightly import nightly_flow

        second = nightly_flow(as_of=AS_OF)
    assert second["extract"].units == []
    assert second["extract"].files_skipped > 0
    assert second["validate"].rows_in == 0
    assert second["features"].rows == first_run["features"].rows
    assert second["features"].manifest == first_run["features"].manifest
    # the same inputs (features, settings, as_of): nothing is trained, the champion is reused
    assert not second["train"].promoted
    assert second["train"].decision.startswith("skipped: the inputs are unchanged"), second
    assert second["train"].model_version == first_run["train"].model_version
    assert second["train"].serving == first_run["train"].serving
    assert second["publish"].n_rows == first_run["publish"].n_rows


def test_cli_recommend_reads_the_serving_store(
    first_run: dict[str, Any],
    env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with _serving(env) as db:
        user, source = db.execute(
            "select user_id, max(source) from recommendations where source <> 'popular' "
            "group by user_id having count(distinct source) = 1 order by user_id limit 1"
        ).fetchone()
    from flows.cli import main

    assert main(["recommend", user]) == 0
    out = capsys.readouterr().out
    assert f"recommendations for {user} ({source})" in out
    assert len([line for line in out.splitlines() if line.strip().endswith(source)]) == 10


@pytest.mark.parametrize("stage", ["extract", "validate", "features", "train", "score", "publish"])
def test_a_failing_stage_fails_the_run_naming_it_and_leaves_serving_alone(
    stage: str, first_run: dict[str, Any], env: dict[str, str]
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    import flows.nightly

    def broken(*_: object, **__: object) -> None:
        raise RuntimeError(f"injected into {stage}")

    with _serving(env) as db:
        before = db.execute("select count(*), max(published_at) from publications").fetchone()
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        mp.setenv("RECS_TASK_RETRIES", "0")
        mp.setattr(flows.nightly, f"_{stage}", broken)
        with pytest.raises(RuntimeError, match=f"injected into {stage}"):
            flows.nightly.nightly_flow(as_of=AS_OF)
    with _serving(env) as db:
        after = db.execute("select count(*), max(published_at) from publications").fetchone()
    assert after == before  # yesterday's version still serving
    with get_client(sync_client=True) as client:
        latest = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["nightly-summary"])),
            sort=ArtifactSort.CREATED_DESC,
            limit=1,
        )
    assert latest
    assert f"FAILED at stage `{stage}`" in str(latest[0].data)
    assert f"injected into {stage}" in str(latest[0].data)
