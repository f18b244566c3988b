"""MLflow for real (a temporary sqlite store): log, register, promote, load the champion."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest

from pipelines.stores.tracking import (
    LoggedModel,
    Tracking,
    load_champion,
    log_training_run,
    set_aliases,
)
from tests.unit.test_recommender_contract import _lightfm


@pytest.fixture
def tracking(tmp_path: Path) -> Tracking:
    return Tracking(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts", "exp", "recs")


def _log(tracking: Tracking, promote: bool) -> str:
    logged = log_training_run(
        tracking, _lightfm(), run_name="r", params={"k": 10},
        metrics={"model_precision_at_10": 0.2}, tags={"decision": "x"}, promote=promote,
    )  # fmt: skip
    set_aliases(tracking, logged.version, propose=True, promote=promote)
    return logged.version


def test_no_champion_before_the_first_promotion(tracking: Tracking) -> None:
    assert load_champion(tracking) is None
    _log(tracking, promote=False)
    assert load_champion(tracking) is None


def test_promotion_moves_the_alias_and_the_pyfunc_serves_lists(tracking: Tracking) -> None:
    first = _log(tracking, promote=True)
    _log(tracking, promote=False)
    champion = load_champion(tracking)
    assert champion is not None
    assert champion.version == first
    third = _log(tracking, promote=True)
    champion = load_champion(tracking)
    assert champion is not None
    assert champion.version == third

    model = mlflow.pyfunc.load_model("models:/recs@champion")
    out = model.predict(pd.DataFrame({"user_id": ["u0", "someone-new"]}), params={"k": 3})
    assert out["rank"].tolist() == [1, 2, 3, 1, 2, 3]
    assert out.groupby("user_id")["source"].first().to_dict() == {
        "someone-new": "cold_start",
        "u0": "model",
    }
    run = mlflow.get_run(champion.run_id)
    assert run.data.tags["promoted"] == "true"
    assert run.data.metrics["model_precision_at_10"] == 0.2


def test_a_killed_runs_debris_is_finalised_and_the_champion_kept(tracking: Tracking) -> None:
    from mlflow.tracking import MlflowClient

    from pipelines.stores.tracking import finish_abandoned_runs

    champion = _log(tracking, promote=True)
    experiment_id = tracking.activate()
    client = MlflowClient()
    # What a kill inside log_training_run leaves: a RUNNING run with a registered version.
    stuck = client.create_run(experiment_id, run_name="killed")
    client.create_model_version("recs", source="file:///nowhere", run_id=stuck.info.run_id)
    debris = finish_abandoned_runs(tracking, by_run="next-run", committed=set())
    assert debris.runs_failed == [stuck.info.run_id]
    assert len(debris.versions_deleted) == 1
    run = client.get_run(stuck.info.run_id)
    assert (run.info.status, run.data.tags["abandoned_by"]) == ("FAILED", "next-run")
    versions = client.search_model_versions("name = 'recs'")
    assert [str(v.version) for v in versions] == [champion]
    assert finish_abandoned_runs(tracking, by_run="again", committed=set()) == type(debris)([], [])


def test_a_run_killed_after_its_commit_is_rolled_forward(tracking: Tracking) -> None:
    """A kill between the warehouse commit and the aliases: the next training's finalisation
    gives the version the aliases its tags call for and marks the run FINISHED."""
    from mlflow.tracking import MlflowClient

    from pipelines.stores.tracking import finish_abandoned_runs

    first = _log(tracking, promote=True)
    client = MlflowClient()

    def killed_after_the_commit() -> None:
        with mlflow.start_run(experiment_id=tracking.activate()):
            logged = log_training_run(
                tracking, _lightfm(), run_name="r", params={}, metrics={}, tags={}, promote=True
            )
            seen.append(logged)
            raise KeyboardInterrupt("killed after the commit, before the aliases")

    seen: list[LoggedModel] = []
    with pytest.raises(KeyboardInterrupt):
        killed_after_the_commit()
    (logged,) = seen
    assert client.get_run(logged.run_id).info.status == "FAILED"
    aliases = client.get_registered_model("recs").aliases
    assert aliases == {"challenger": int(first), "champion": int(first)}
    debris = finish_abandoned_runs(tracking, by_run="next", committed={logged.run_id})
    assert debris == type(debris)([], [])
    aliases = client.get_registered_model("recs").aliases
    assert {k: str(v) for k, v in aliases.items()} == {
        "challenger": logged.version, "champion": logged.version, "previous-champion": first,
    }  # fmt: skip
    assert client.get_run(logged.run_id).info.status == "FINISHED"


def test_aliases_follow_each_version_and_each_promotion(tracking: Tracking) -> None:
    from mlflow.tracking import MlflowClient

    def aliases() -> dict[str, str]:
        model = MlflowClient().get_registered_model("recs")
        return {alias: str(version) for alias, version in model.aliases.items()}

    first = _log(tracking, promote=True)
    assert aliases() == {"challenger": first, "champion": first}
    second = _log(tracking, promote=True)
    assert aliases() == {"challenger": second, "champion": second, "previous-champion": first}
    third = _log(tracking, promote=False)  # proposed, not promoted: the champion stays
    assert aliases() == {"challenger": third, "champion": second, "previous-champion": first}
