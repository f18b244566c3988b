"""``recs doctor``: every configured service checked against the real ones (SQLite, the local
PostgreSQL server, an MLflow store), and a clear FAIL row, never a secret, when one is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.cli import main


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RECS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RECS_MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("RECS_MLFLOW_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    return tmp_path / "data"


def _rows(out: str) -> dict[str, list[str]]:
    rows = [line.strip("|").split(" | ") for line in out.splitlines() if line.startswith("| ")]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows[1:]}


def test_a_fresh_local_setup_is_healthy(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert rows["lake (Parquet)"][2] == "ok"
    assert rows["serving store (SQLite)"][2] == "ok"
    assert rows["warehouse (DuckDB)"][2] == "-"  # not created before the first run
    (mlflow,) = [v for k, v in rows.items() if k.startswith("MLflow tracking")]
    assert mlflow[2] == "ok"
    assert "no @champion yet" in mlflow[3]
    (prefect,) = [v for k, v in rows.items() if k.startswith("Prefect API")]
    assert prefect[2] == "-"
    assert "temporary local" in prefect[3]


def test_postgresql_serving_store_shows_version_and_permissions(
    data_dir: Path,
    pg_schema_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("RECS_SERVING_URL", pg_schema_url)
    assert main(["doctor"]) == 0
    row = _rows(capsys.readouterr().out)["serving store (PostgreSQL)"]
    assert row[2] == "ok"
    assert row[3].startswith("PostgreSQL 1")
    assert "can create tables: yes" in row[3]


def test_unreachable_services_fail_with_one_line_each_and_no_secret(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(
        "RECS_SERVING_URL", "postgresql://root:s3cr3t-pw@127.0.0.1:5432/no_such_database"
    )
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # discard port: refused
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "s3cr3t-pw" not in out
    rows = _rows(out)
    serving = rows["serving store (PostgreSQL)"]
    assert serving[1] == "postgresql://root:***@127.0.0.1:5432/no_such_database"
    assert serving[2] == "FAIL"
    assert "no_such_database" in serving[3]
    (prefect,) = [v for k, v in rows.items() if k.startswith("Prefect API")]
    assert prefect[2] == "FAIL"
    assert rows["lake (Parquet)"][2] == "ok"  # one failure hides no other check


def test_a_dask_scheduler_is_reached_and_its_workers_counted(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipelines.stores.cluster import local_cluster

    with local_cluster(2) as address:
        monkeypatch.setenv("RECS_DASK_ADDRESS", address)
        assert main(["doctor"]) == 0
    (dask,) = [v for k, v in _rows(capsys.readouterr().out).items() if k.startswith("Dask")]
    assert dask[1] == address
    assert dask[2] == "ok"
    assert "2 workers, 2 threads" in dask[3]
    monkeypatch.setenv("RECS_DASK_ADDRESS", "tcp://127.0.0.1:9")
    assert main(["doctor"]) == 1
    (dask,) = [v for k, v in _rows(capsys.readouterr().out).items() if k.startswith("Dask")]
    assert dask[2] == "FAIL"
