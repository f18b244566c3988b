"""The operator's flows on ``tiny``, for real: retrain-only, rollback (score and publish with the
previous champion) and a two-night backfill that writes its own feature schemas and leaves the
latest tables, the champion and the serving store alone."""

from __future__ import annotations

import shutil
import sqlite3
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

AS_OF = datetime(2026, 10, 15, tzinfo=UTC)  # the night after the tiny preset's last day


@pytest.fixture
def env(
    tmp_path: Path, tiny_landing: Path, monkeypatch: pytest.MonkeyPatch, prefect_harness: None
) -> Path:
    shutil.copytree(tiny_landing, tmp_path / "landing")
    for key, value in {
        "RECS_DATA_DIR": str(tmp_path),
        "RECS_MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "RECS_MLFLOW_ARTIFACTS_DIR": str(tmp_path / "artifacts"),
        "RECS_HOLDOUT_DAYS": "4",
    }.items():
        monkeypatch.setenv(key, value)
    return tmp_path


def _aliases(root: Path) -> dict[str, str]:
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    model = client.get_registered_model("recs-lightfm")
    return {a: str(v) for a, v in model.aliases.items()}


def _served_version(root: Path) -> set[str]:
    db = sqlite3.connect(root / "serving.sqlite")
    try:
        return {str(r[0]) for r in db.execute("select distinct model_version from recommendations")}
    finally:
        db.close()


def test_retrain_then_rollback_serves_the_previous_champion(env: Path) -> None:
    from flows.nightly import nightly_flow
    from flows.operations import retrain_flow, rollback_flow

    first: dict[str, Any] = nightly_flow(as_of=AS_OF)
    v1 = first["train"].model_version
    assert _aliases(env) == {"challenger": v1, "champion": v1}
    retrained = retrain_flow(as_of=AS_OF)
    v2 = retrained["train"].model_version
    assert v2 != v1
    assert _aliases(env) == {"challenger": v2, "champion": v2, "previous-champion": v1}
    assert _served_version(env) == {v1}  # retrain-only publishes nothing
    back = rollback_flow(as_of=AS_OF)
    assert (back["rollback"].version, back["rollback"].rolled_back) == (v1, v2)
    assert _aliases(env) == {"challenger": v2, "champion": v1}
    assert back["publish"].model_version == v1
    assert _served_version(env) == {v1}
    client = MlflowClient(tracking_uri=f"sqlite:///{env / 'mlflow.db'}")
    assert client.get_model_version("recs-lightfm", v2).tags["rolled_back"] == "true"
    with pytest.raises(LookupError, match="no previous champion"):
        rollback_flow(as_of=AS_OF)
    from flows.cli import main

    assert main(["model", "rollback", "--as-of", AS_OF.isoformat()]) == 1  # one line, exit 1


def test_backfill_writes_its_own_feature_schemas_and_serves_nothing(env: Path) -> None:
    from flows.nightly import nightly_flow
    from flows.operations import backfill_flow
    from pipelines.stores import warehouse

    tonight = nightly_flow(as_of=AS_OF)
    served = (env / "serving.sqlite").read_bytes()
    nights = backfill_flow(since=date(2026, 10, 12), until=date(2026, 10, 13))
    assert [n["as_of"] for n in nights] == [
        "2026-10-13T00:00:00+00:00", "2026-10-14T00:00:00+00:00",
    ]  # fmt: skip
    assert all(n["rows"] > 0 and Path(n["path"]).exists() for n in nights)
    assert (env / "serving.sqlite").read_bytes() == served
    # a backfill's versions are neither tonight's proposal nor its champion
    version = tonight["train"].model_version
    assert _aliases(env) == {"challenger": version, "champion": version}
    warehouse.require_features_for(env / "warehouse.duckdb", AS_OF)  # latest tables untouched
    con = duckdb.connect(str(env / "warehouse.duckdb"), read_only=True)
    schemas = sorted(
        str(r[0])
        for r in con.execute(
            "select distinct table_schema from information_schema.tables "
            "where table_name = 'interactions'"
        ).fetchall()
    )
    con.close()
    assert schemas == ["asof_20261013t000000", "asof_20261014t000000", "main"]
