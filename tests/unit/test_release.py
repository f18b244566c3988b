"""Quarantined rows are released into the clean zone after a fix, once, never as duplicates."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import polars as pl

from pipelines.extract import extract
from pipelines.release import release_quarantine
from pipelines.sources.readers import FileSource
from pipelines.stores import Stores as Paths
from pipelines.stores import lake
from pipelines.suites.events import ValidationThresholds
from pipelines.validate import validate

AT = datetime(2030, 1, 1, tzinfo=UTC)
GATE = ValidationThresholds(max_quarantine_share=0.05, clock_skew_minutes=0)


def _clean_ids(paths: Paths) -> list[str]:
    rows = duckdb.execute(
        "select event_id from read_parquet(?)", [lake.events_glob(paths.lake, "clean")]
    ).fetchall()
    return [r[0] for r in rows]


def test_unknown_items_are_released_after_the_catalog_is_fixed(
    tmp_path: Path, tiny_landing: Path
) -> None:
    shutil.copytree(tiny_landing, tmp_path / "landing")
    paths = Paths(tmp_path / "landing", tmp_path / "lake", tmp_path / "wh.duckdb", "sqlite:///x")
    extract(paths, sources=[FileSource()], run_id="r1", ingested_at=AT)
    report = validate(paths, run_id="v1", now=AT, thresholds=GATE)
    n_unknown = report.quarantined_by_reason["unknown_item"]
    n_duplicates = report.quarantined_by_reason["duplicate_event_id"]
    before = _clean_ids(paths)

    # Nothing fixed yet: nothing is released.
    assert release_quarantine(paths, run_id="x0", now=AT, thresholds=GATE).rows_released == 0

    # The fix: the missing items join the catalog, and the catalog is extracted again.
    con = duckdb.connect(str(paths.warehouse), read_only=True)
    raws = [r for (r,) in con.execute(
        "select raw from quarantine where reason = 'unknown_item'").fetchall()]  # fmt: skip
    con.close()
    missing = sorted({pl.Series([r]).str.json_path_match("$.item_id")[0] for r in raws})
    items = pl.read_csv(paths.landing / "items.csv")
    extra = pl.DataFrame({"item_id": missing}).with_columns(pl.lit(True).alias("available"))
    pl.concat([items, extra], how="diagonal").write_csv(paths.landing / "items.csv")
    extract(paths, sources=[FileSource()], run_id="r2", ingested_at=AT)

    released = release_quarantine(paths, run_id="x1", now=AT, thresholds=GATE)
    assert released.rows_released == n_unknown
    assert released.still_quarantined_by_reason["duplicate_event_id"] == n_duplicates
    after = _clean_ids(paths)
    assert len(after) == len(before) + n_unknown
    assert len(set(after)) == len(after)  # no duplicates, even of released rows
    assert all(u.split("/")[1].startswith("released-x1") for u in released.units)

    # Releasing again does nothing; a later validation keeps the released files.
    assert release_quarantine(paths, run_id="x2", now=AT, thresholds=GATE).rows_released == 0
    validate(paths, run_id="v2", now=AT, thresholds=GATE)
    assert len(_clean_ids(paths)) == len(after)
