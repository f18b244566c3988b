"""The extract stage on the tiny preset: reconciliation, idempotent reruns, skips and backfills."""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from pipelines.extract import extract
from pipelines.sources.readers import FileSource
from pipelines.stores import Stores as Paths
from pipelines.stores import lake

AT = datetime(2030, 1, 1, tzinfo=UTC)


def _paths(tmp_path: Path, landing: Path) -> Paths:
    shutil.copytree(landing, tmp_path / "landing")
    return Paths(tmp_path / "landing", tmp_path / "lake", tmp_path / "wh.duckdb", "sqlite:///x")


def _snapshot(paths: Paths) -> dict[str, object]:
    root = lake.zone_dir(paths.lake, "raw")
    return {u: pq.read_table(root / u).drop(["ingested_at"]) for u in lake.units(paths.lake, "raw")}


def test_rerun_replaces_partitions_identically(tmp_path: Path, tiny_landing: Path) -> None:
    paths = _paths(tmp_path, tiny_landing)
    first = extract(paths, sources=[FileSource()], run_id="r1", ingested_at=AT)
    assert first.rows_read == first.rows_written + first.rows_rejected
    before = _snapshot(paths)
    again = extract(paths, sources=[FileSource()], run_id="r2", ingested_at=AT, force=True)
    assert sorted(again.units) == sorted(first.units)
    after = _snapshot(paths)
    assert before.keys() == after.keys()
    assert all(before[u].equals(after[u]) for u in before)  # type: ignore[attr-defined]
    ids = duckdb.execute(
        "select count(*), count(distinct (source, event_id)) from read_parquet(?)",
        [lake.events_glob(paths.lake, "raw")],
    ).fetchall()[0]
    assert ids[0] == first.rows_written  # nothing doubled by the rerun


def test_unchanged_files_are_skipped_and_a_backfill_rereads_its_dates(
    tmp_path: Path, tiny_landing: Path
) -> None:
    paths = _paths(tmp_path, tiny_landing)
    n_files = len(FileSource().files(paths.landing / "events"))
    extract(paths, sources=[FileSource()], run_id="r1", ingested_at=AT)
    skipped = extract(paths, sources=[FileSource()], run_id="r2", ingested_at=AT)
    assert (skipped.rows_read, skipped.files_skipped) == (0, n_files)
    backfill = extract(
        paths, sources=[FileSource()], run_id="r3", ingested_at=AT,
        since=date(2026, 10, 2), until=date(2026, 10, 3),
    )  # fmt: skip
    assert backfill.sources[0].files_read == 2
    assert backfill.files_skipped == n_files - 2
