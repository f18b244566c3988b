"""Every stage commits once: a kill (an injected exception) between a stage's writes, then a
rerun, ends exactly where a clean run does; a forced re-extraction replaces a file's rejects
instead of adding copies."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from pipelines import extract as extract_stage
from pipelines.extract import extract
from pipelines.sources.readers import FileSource
from pipelines.stores import Stores, lake
from pipelines.suites.events import ValidationThresholds
from pipelines.validate import validate

AT = datetime(2030, 1, 1, tzinfo=UTC)


def _stores(root: Path, landing: Path) -> Stores:
    shutil.copytree(landing, root / "landing")
    return Stores(
        root / "landing", root / "lake", root / "wh.duckdb", f"sqlite:///{root / 'serving.db'}"
    )


def _quarantine(stores: Stores) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(stores.warehouse), read_only=True)
    try:
        return con.execute(
            "select stage, reason, source, line_no, event_id, raw from quarantine order by all"
        ).fetchall()
    finally:
        con.close()


def _clean_rows(stores: Stores) -> int:
    glob = lake.events_glob(stores.lake, "clean")
    return int(duckdb.execute(f"select count(*) from read_parquet('{glob}')").fetchall()[0][0])


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory: pytest.TempPathFactory, tiny_landing: Path) -> Stores:
    stores = _stores(tmp_path_factory.mktemp("clean"), tiny_landing)
    extract(stores, sources=[FileSource()], run_id="r", ingested_at=AT)
    validate(stores, run_id="v", now=AT, thresholds=ValidationThresholds())
    return stores


def test_forced_re_extraction_replaces_rejects(tmp_path: Path, tiny_landing: Path) -> None:
    stores = _stores(tmp_path, tiny_landing)
    extract(stores, sources=[FileSource()], run_id="r1", ingested_at=AT)
    first = _quarantine(stores)
    assert first
    extract(stores, sources=[FileSource()], run_id="r2", ingested_at=AT, force=True)
    assert _quarantine(stores) == first


def test_a_kill_inside_extract_then_a_rerun_equals_a_clean_run(
    tmp_path: Path, tiny_landing: Path, clean_run: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    stores = _stores(tmp_path, tiny_landing)
    real = extract_stage._manifest_row
    calls = {"n": 0}

    def dies_on_the_fifth(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 5:  # after the fifth file's lake write and quarantine statement
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(extract_stage, "_manifest_row", dies_on_the_fifth)
    with pytest.raises(KeyboardInterrupt):
        extract(stores, sources=[FileSource()], run_id="r1", ingested_at=AT)
    monkeypatch.setattr(extract_stage, "_manifest_row", real)
    extract(stores, sources=[FileSource()], run_id="r2", ingested_at=AT)
    validate(stores, run_id="v", now=AT, thresholds=ValidationThresholds())
    assert _quarantine(stores) == _quarantine(clean_run)
    assert _clean_rows(stores) == _clean_rows(clean_run)


def test_a_kill_between_validates_commit_and_its_files_then_a_rerun_equals_a_clean_run(
    tmp_path: Path, tiny_landing: Path, clean_run: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    stores = _stores(tmp_path, tiny_landing)
    extract(stores, sources=[FileSource()], run_id="r", ingested_at=AT)
    real = lake.StagedUnit.commit

    def killed(self: lake.StagedUnit) -> Path:
        raise KeyboardInterrupt("killed after the warehouse commit")

    monkeypatch.setattr(lake.StagedUnit, "commit", killed)
    with pytest.raises(KeyboardInterrupt):
        validate(stores, run_id="v1", now=AT, thresholds=ValidationThresholds())
    assert not lake.units(stores.lake, "clean")  # nothing visible yet
    monkeypatch.setattr(lake.StagedUnit, "commit", real)
    validate(stores, run_id="v2", now=AT, thresholds=ValidationThresholds())
    assert _quarantine(stores) == _quarantine(clean_run)
    assert _clean_rows(stores) == _clean_rows(clean_run)
