"""Names are data, never patterns or paths: a landing file whose name looks like a glob is
extracted as itself and deletes nothing; a source name that is a path is refused."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

from pipelines.extract import extract
from pipelines.sources.readers import FileSource, PostgresSource
from pipelines.stores import Stores, lake

AT = datetime(2030, 1, 1, tzinfo=UTC)


def _lake_rows(root: Path) -> int:
    glob = lake.events_glob(root, "raw")
    rows = duckdb.execute(f"select count(*) from read_parquet('{glob}')").fetchall()
    return int(rows[0][0])


def test_a_file_named_like_a_glob_is_itself_and_deletes_nothing(
    tmp_path: Path, tiny_landing: Path
) -> None:
    events = tmp_path / "landing" / "events"
    events.mkdir(parents=True)
    for name in ("users.csv", "items.csv"):
        shutil.copy(tiny_landing / name, tmp_path / "landing" / name)
    days = sorted((tiny_landing / "events").iterdir())[:9]
    for day in days:  # events-2026-10-01 .. 09
        shutil.copy(day, events / day.name)
    # The same bytes as the first day, under a name that, as a glob, matches all nine.
    shutil.copy(days[0], events / "events-2026-10-0[1-9].jsonl.gz")
    stores = Stores(
        tmp_path / "landing", tmp_path / "lake", tmp_path / "wh.duckdb",
        f"sqlite:///{tmp_path / 'serving.db'}",
    )  # fmt: skip
    report = extract(stores, sources=[FileSource()], run_id="r", ingested_at=AT)
    assert report.rows_read == report.rows_written + report.rows_rejected
    assert _lake_rows(tmp_path / "lake") == report.rows_written
    bracketed = lake.part_paths(tmp_path / "lake", "raw", "landing--events-2026-10-0[1-9]")
    first = lake.part_paths(tmp_path / "lake", "raw", "landing--events-2026-10-01")
    assert [p.parent.name for p in bracketed] == [p.parent.name for p in first]
    assert all(p.name == "landing--events-2026-10-0[1-9].parquet" for p in bracketed)
    # Re-extracting the bracketed file alone (force) keeps every other day's rows.
    again = extract(stores, sources=[FileSource()], run_id="r2", ingested_at=AT, force=True)
    assert _lake_rows(tmp_path / "lake") == again.rows_written == report.rows_written


@pytest.mark.parametrize(
    "name", ["../../../../escaped", "a/b", "..", ".hidden", "a--b", "with space", "x" * 65, ""]
)
def test_a_source_name_that_is_not_an_identifier_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="source name"):
        FileSource(name=name)
    with pytest.raises(ValueError, match="source name"):
        PostgresSource(name=name, url="postgresql://h/db", table="t")


@pytest.mark.parametrize("part", ["../escaped", "a/b", ".x", "a\\b", " x"])
def test_the_lake_builds_no_path_from_a_part_that_is_not_a_file_name(
    tmp_path: Path, part: str
) -> None:
    with pytest.raises(ValueError, match="part name"):
        lake.part_paths(tmp_path, "raw", part)
    with pytest.raises(ValueError, match="part name"):
        lake.DayWriters(tmp_path, "raw", part)
