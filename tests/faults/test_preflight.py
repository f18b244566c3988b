"""Fail early and clearly: a store a run cannot use is named before the first stage, in one line,
with its URL redacted, and nothing is written."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipelines.stores import Stores
from pipelines.stores.preflight import PreflightError, check_stores
from pipelines.stores.tracking import Tracking

SECRET = "pw-preflight-9d2"


def _stores(root: Path, **change: object) -> Stores:
    fields: dict[str, object] = {
        "landing": root / "landing", "lake": root / "lake", "warehouse": root / "wh.duckdb",
        "serving_url": f"sqlite:///{root / 'serving.db'}",
    }  # fmt: skip
    fields.update(change)
    return Stores(**fields)  # type: ignore[arg-type]


def _tracking(root: Path, uri: str | None = None) -> Tracking:
    return Tracking(uri or f"sqlite:///{root / 'mlflow.db'}", root / "artifacts", "exp", "recs")


def test_good_stores_pass_and_leave_no_probe_behind(tmp_path: Path) -> None:
    check_stores(_stores(tmp_path), _tracking(tmp_path))
    assert not list(tmp_path.rglob(".preflight.*"))


def _refused(stores: Stores, tracking: Tracking | None = None) -> str:
    with pytest.raises(PreflightError) as raised:
        check_stores(stores, tracking)
    message = str(raised.value)
    assert "\n" not in message
    return message


def test_a_lake_that_cannot_be_a_directory_is_named(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    message = _refused(_stores(tmp_path, lake=tmp_path / "a-file" / "lake"))
    assert message.startswith(f"lake directory {tmp_path / 'a-file' / 'lake'}: expected a writable")


def test_an_unreachable_postgresql_serving_store_is_named_without_its_password(
    tmp_path: Path, postgres_url: str
) -> None:
    url = postgres_url.replace("://root@", f"://root:{SECRET}@").replace("/test", "/no_such_db")
    message = _refused(_stores(tmp_path, serving_url=url))
    assert message.startswith("serving store postgresql://root:***@127.0.0.1:5432/no_such_db")
    assert "does not exist" in message
    assert SECRET not in message


def test_a_tracking_uri_mlflow_cannot_use_is_named(tmp_path: Path) -> None:
    uri = f"ftp://user:{SECRET}@host/runs"
    message = _refused(_stores(tmp_path), _tracking(tmp_path, uri))
    assert message.startswith("MLflow tracking URI 'ftp://user:***@host/runs': expected")
    assert "RECS_MLFLOW_TRACKING_URI" in message


@pytest.mark.slow
def test_the_flow_stops_before_its_first_stage(
    tmp_path: Path, tiny_landing: Path, prefect_harness: None, postgres_url: str
) -> None:
    import shutil

    import flows.nightly

    shutil.copytree(tiny_landing, tmp_path / "landing")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RECS_DATA_DIR", str(tmp_path))
        mp.setenv("RECS_MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
        mp.setenv("RECS_SERVING_URL", postgres_url.replace("/test", "/no_such_db"))
        start = datetime.now(UTC)
        with pytest.raises(PreflightError, match="no_such_db"):
            flows.nightly.nightly_flow()
    assert (datetime.now(UTC) - start).total_seconds() < 60
    assert not (tmp_path / "lake").exists() or not list((tmp_path / "lake").rglob("*.parquet"))
    assert not (tmp_path / "mlflow.db").exists()
