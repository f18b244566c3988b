"""Secrets never leave the process: a nightly run whose serving URL carries a password, then one
that fails on it, through the real Prefect, MLflow, GX, DuckDB and PostgreSQL. Every log record
(Python's and the Prefect API's), every Prefect artifact and flow-run state message, every
warehouse table and view, every MLflow param, tag, metric name and registry description, every
file the run wrote, and the error raised are searched: no password."""

from __future__ import annotations

import logging
import shutil
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

SECRET = "pw-s3cr3t-7f1c"
AS_OF = datetime(2026, 10, 15, tzinfo=UTC)


class _Everything:
    """Every record any logger handles (Prefect's loggers do not propagate to the root, so the
    records are taken where every logger handles them), formatted with its traceback."""

    def __init__(self) -> None:
        self.formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
        self.lines: list[str] = []


@pytest.fixture
def every_log_record(monkeypatch: pytest.MonkeyPatch) -> _Everything:
    seen = _Everything()
    handle = logging.Logger.handle

    def keep(self: logging.Logger, record: logging.LogRecord) -> None:
        seen.lines.append(seen.formatter.format(record))
        handle(self, record)

    monkeypatch.setattr(logging.Logger, "handle", keep)
    return seen


def _prefect_texts(started: datetime) -> list[str]:
    """Logs, artifacts and flow-run state messages the Prefect API holds since ``started``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterStartTime,
        LogFilter,
        LogFilterTimestamp,
    )

    logs: list[Any] = []
    with get_client(sync_client=True) as client:
        while page := client.read_logs(  # the API pages by 200 at most
            log_filter=LogFilter(timestamp=LogFilterTimestamp(after_=started)),
            limit=200,
            offset=len(logs),
        ):
            logs += page
        artifacts = client.read_artifacts(limit=200)
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(start_time=FlowRunFilterStartTime(after_=started))
        )
    texts = [log.message for log in logs]
    texts += [f"{a.key} {a.description} {a.data}" for a in artifacts]
    texts += [f"{r.name} {r.parameters} {r.state.message if r.state else ''}" for r in runs]
    assert logs  # the search looked at something
    assert artifacts
    assert runs
    return texts


def _warehouse_texts(path: Path) -> list[str]:
    import duckdb

    con = duckdb.connect(str(path), read_only=True)
    try:
        names = con.execute(
            "select table_schema, table_name from information_schema.tables"
        ).fetchall()
        texts = [repr(con.execute(f'select * from "{s}"."{t}"').fetchall()) for s, t in names]
        texts.append(repr(con.execute("select * from duckdb_tables()").fetchall()))
        texts.append(repr(con.execute("select * from duckdb_views()").fetchall()))
        return texts
    finally:
        con.close()


def _mlflow_texts(tracking_uri: str) -> list[str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    texts = []
    for experiment in client.search_experiments():
        for run in client.search_runs([experiment.experiment_id]):
            texts.append(repr((run.data.params, run.data.tags, list(run.data.metrics))))
    for model in client.search_registered_models():
        texts.append(repr((model.description, model.tags)))
        for version in client.search_model_versions(f"name = '{model.name}'"):
            texts.append(repr((version.description, version.tags, version.source)))
    assert texts
    return texts


def _files_with_secret(root: Path) -> list[str]:
    """Files under ``root`` whose bytes hold the secret (DuckDB's file is searched by SQL: it
    may compress strings)."""
    return [
        str(p)
        for p in root.rglob("*")
        if p.is_file() and p.suffix != ".duckdb" and SECRET.encode() in p.read_bytes()
    ]


def test_no_password_in_any_log_artifact_table_file_or_error(
    tmp_path: Path,
    tiny_landing: Path,
    pg_schema_url: str,
    prefect_harness: None,
    every_log_record: _Everything,
) -> None:
    import flows.nightly
    from pipelines.stores.preflight import PreflightError

    url = pg_schema_url.replace("://root@", f"://root:{SECRET}@")  # trust auth ignores it
    assert SECRET in url
    shutil.copytree(tiny_landing, tmp_path / "landing")
    env = {
        "RECS_DATA_DIR": str(tmp_path),
        "RECS_MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "RECS_MLFLOW_ARTIFACTS_DIR": str(tmp_path / "artifacts"),
        "RECS_HOLDOUT_DAYS": "4",
        "RECS_SERVING_K": "10",
        "RECS_SERVING_URL": url,
        "RECS_TASK_RETRIES": "0",
    }
    started = datetime.now(UTC)
    errors: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        reports: dict[str, Any] = flows.nightly.nightly_flow(as_of=AS_OF)
        assert reports["publish"].n_rows > 0  # it ran, and published with that URL
        # The same URL to a database that does not exist: the run fails before its first stage.
        mp.setenv("RECS_SERVING_URL", url.replace("/test?", "/no_such_database?"))
        with pytest.raises(PreflightError, match="no_such_database") as raised:
            flows.nightly.nightly_flow(as_of=AS_OF)
        errors += [str(raised.value), "".join(traceback.format_exception(raised.value))]
    assert "no_such_database" in errors[1]  # the failure we meant, not another
    texts = {
        "logs": every_log_record.lines,
        "prefect": _prefect_texts(started),
        "warehouse": _warehouse_texts(tmp_path / "warehouse.duckdb"),
        "mlflow": _mlflow_texts(env["RECS_MLFLOW_TRACKING_URI"]),
        "errors": errors,
        "reports": [repr(reports)],
    }
    leaks = {where: [t[:200] for t in found if SECRET in t] for where, found in texts.items()}
    assert not any(leaks.values()), leaks
    assert _files_with_secret(tmp_path) == []
    # The search saw the run's own records, the failing run's error with its URL among them.
    assert any("extracted " in line for line in every_log_record.lines)
    assert any(
        "root:***@" in line and "no_such_database" in line for line in every_log_record.lines
    )
