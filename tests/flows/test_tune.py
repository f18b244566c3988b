"""Tuning on the ``tiny`` preset: an Optuna study whose trials are MLflow child runs, that never
reads the nightly's window, whose best configuration the next nightly trains with."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import mlflow
import pytest

from features.signal import SignalParams
from models.params import LightFMParams
from pipelines.extract import extract
from pipelines.sources.readers import FileSource
from pipelines.stores import Stores
from pipelines.stores.tracking import Tracking
from pipelines.suites.events import ValidationThresholds
from pipelines.tune import TuneReport, _Window, latest_tuning, tune
from pipelines.validate import validate
from tests.unit.test_stages import _truncated_landing

pytestmark = pytest.mark.slow

AS_OF = datetime(2026, 10, 15, tzinfo=UTC)
HOLDOUT = 3
AT = datetime(2030, 1, 1, tzinfo=UTC)
BASE = LightFMParams(num_threads=1, epochs=3, no_components=16)  # inside the search space


def _tuned(root: Path, landing: Path) -> tuple[TuneReport, Tracking, Stores]:
    stores = Stores(landing, root / "lake", root / "wh.duckdb", f"sqlite:///{root / 's.db'}")
    tracking = Tracking(f"sqlite:///{root / 'mlflow.db'}", root / "artifacts", "exp", "recs")
    extract(stores, sources=[FileSource()], run_id="r", ingested_at=AT)
    validate(stores, run_id="r", now=AT, thresholds=ValidationThresholds())
    report = tune(
        stores, tracking, as_of=AS_OF, holdout_days=HOLDOUT, k=5, base=BASE,
        signal=SignalParams(), n_trials=4, timeout_s=None, run_id="tune-1", seed=3,
    )  # fmt: skip
    return report, tracking, stores


@pytest.fixture(scope="module")
def study(
    tmp_path_factory: pytest.TempPathFactory, tiny_landing: Path
) -> tuple[TuneReport, Tracking, Stores]:
    return _tuned(tmp_path_factory.mktemp("tune"), tiny_landing)


def test_trials_are_child_runs_and_the_best_is_recorded(
    study: tuple[TuneReport, Tracking, Stores],
) -> None:
    report, tracking, stores = study
    assert report.window_end == AS_OF - timedelta(days=HOLDOUT)
    assert report.window_start == AS_OF - timedelta(days=2 * HOLDOUT)
    assert report.n_trials == 4
    assert report.n_users > 0
    assert report.best_value >= report.default_value  # trial 0 is the configuration in use
    client = mlflow.MlflowClient(tracking.tracking_uri)
    experiment = client.get_experiment_by_name("exp-tuning")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == report.mlflow_run_id]
    assert len(children) == 4
    first = min(children, key=lambda r: r.info.start_time)
    assert int(first.data.params["no_components"]) == BASE.no_components  # trial 0: in use
    assert all("validation_precision_at_5" in c.data.metrics for c in children)
    found = latest_tuning(stores.warehouse)
    assert found is not None
    assert (found.run_id, found.params, found.signal) == ("tune-1", report.params, report.signal)
    assert found.params.num_threads == 1


def test_a_study_never_reads_the_nightly_window(
    study: tuple[TuneReport, Tracking, Stores], tmp_path: Path, tiny_landing: Path
) -> None:
    """The same study on the history cut at the tuning window's end chooses the same."""
    report, _, _ = study
    _truncated_landing(tiny_landing, tmp_path / "landing", report.window_end)
    cut, _, _ = _tuned(tmp_path, tmp_path / "landing")
    assert (cut.params, cut.signal) == (report.params, report.signal)
    assert (cut.best_value, cut.default_value) == (report.best_value, report.default_value)


def test_the_nightly_trains_with_the_tuned_configuration(
    tmp_path: Path, tiny_landing: Path, prefect_harness: None
) -> None:
    import flows.nightly
    import flows.operations

    shutil.copytree(tiny_landing, tmp_path / "landing")
    env = {
        "RECS_DATA_DIR": str(tmp_path), "RECS_HOLDOUT_DAYS": "3", "RECS_SERVING_K": "10",
        "RECS_MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "RECS_MLFLOW_ARTIFACTS_DIR": str(tmp_path / "artifacts"), "RECS_NUM_THREADS": "1",
    }  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        flows.nightly.extract_flow()
        flows.nightly.validate_flow()
        tuned = flows.operations.tune_flow(as_of=AS_OF, n_trials=2, seed=1)
        out: dict[str, Any] = flows.nightly.nightly_flow(as_of=AS_OF)
    run = mlflow.MlflowClient(env["RECS_MLFLOW_TRACKING_URI"]).get_run(out["train"].mlflow_run_id)
    chosen = LightFMParams.model_validate_json(run.data.params["lightfm_params"])
    same = {"patience", "num_threads", "epochs"}  # epochs: early stopping chose them
    assert chosen.model_dump(exclude=same) == tuned.params.model_dump(exclude=same)
    assert float(run.data.params["signal_min_rating"]) == tuned.signal.min_rating
    assert run.data.params["signal_max_repeats"] == str(tuned.signal.max_repeats)


def test_a_thin_tuning_window_also_judges_warm_users_on_their_latest_positives(
    study: tuple[TuneReport, Tracking, Stores],
) -> None:
    """As the nightly's window: below ``min_warm_users`` the study's truth gains the latest
    positives of warm users the window does not reach, and its trials never train on them."""
    _, _, stores = study
    end = AS_OF - timedelta(days=HOLDOUT)
    start = end - timedelta(days=HOLDOUT)
    plain = _Window(stores, start, end, SignalParams(), 5)
    thin = _Window(stores, start, end, SignalParams(), 5, min_warm_users=10**6)
    try:
        assert plain.last_positive_users == 0
        assert thin.last_positive_users > 0
        pairs = ["user_id", "item_id"]
        added = thin.truth.join(plain.truth, on=pairs, how="anti")
        assert added["user_id"].n_unique() == thin.last_positive_users
        assert added.join(thin.interactions(SignalParams()), on=pairs, how="semi").height == 0
        assert added.join(plain.interactions(SignalParams()), on=pairs, how="semi").height > 0
    finally:
        plain.con.close()
        thin.con.close()
