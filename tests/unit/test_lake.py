from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.stores import lake
from tests.factories import event_rows, events_table

TWO_DAYS = events_table(event_rows([("u1", "i1", "view", 1), ("u1", "i2", "view", 30)]))
ONE_DAY = events_table(event_rows([("u2", "i3", "click", 2)]))


def test_part_is_split_by_utc_event_date(tmp_path: Path) -> None:
    written = lake.write_part(tmp_path, "raw", "events-a", TWO_DAYS)
    assert [p.parent.name for p in written] == ["dt=2026-10-01", "dt=2026-10-02"]
    assert lake.read_part(tmp_path, "raw", "events-a").num_rows == 2


def test_rewriting_a_part_replaces_it_and_removes_stale_dates(tmp_path: Path) -> None:
    lake.write_part(tmp_path, "raw", "events-a", TWO_DAYS)
    lake.write_part(tmp_path, "raw", "events-b", TWO_DAYS)
    lake.write_part(tmp_path, "raw", "events-a", ONE_DAY)
    assert lake.read_part(tmp_path, "raw", "events-a").column("user_id").to_pylist() == ["u2"]
    assert [p.parent.name for p in lake.part_paths(tmp_path, "raw", "events-a")] == [
        "dt=2026-10-01"
    ]
    # another file's rows in the same partitions are untouched
    assert lake.read_part(tmp_path, "raw", "events-b").num_rows == 2


def test_same_input_twice_gives_identical_partitions(tmp_path: Path) -> None:
    lake.write_part(tmp_path, "raw", "events-a", TWO_DAYS)
    first = {p: pq.read_table(p) for p in lake.part_paths(tmp_path, "raw", "events-a")}
    lake.write_part(tmp_path, "raw", "events-a", TWO_DAYS)
    second = {p: pq.read_table(p) for p in lake.part_paths(tmp_path, "raw", "events-a")}
    assert first.keys() == second.keys()
    assert all(first[p].equals(second[p]) for p in first)


def test_crash_mid_write_leaves_previous_part_readable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake.write_part(tmp_path, "raw", "events-a", TWO_DAYS)

    def crash(self: pq.ParquetWriter, table: object, **_: object) -> None:
        Path(self.where).write_bytes(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pq.ParquetWriter, "write_table", crash)
    with pytest.raises(OSError, match="disk full"):
        lake.write_part(tmp_path, "raw", "events-a", ONE_DAY)
    monkeypatch.undo()
    assert lake.read_part(tmp_path, "raw", "events-a").equals(TWO_DAYS)
    assert not list(tmp_path.rglob("*.tmp"))
