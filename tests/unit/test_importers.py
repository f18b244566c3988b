"""MovieLens 100K and 1M layouts (tiny fixtures), the real ML-100K copy, and the CSV importer."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from pipelines.extract import extract
from pipelines.sources.importers import import_csv, import_movielens
from pipelines.sources.readers import ColumnMapping, FileSource
from pipelines.stores import Stores as Paths
from pipelines.stores import lake

AT = datetime(2026, 11, 1, tzinfo=UTC)


def _events(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines()]


def test_movielens_100k_layout(tmp_path: Path) -> None:
    src = tmp_path / "ml"
    src.mkdir()
    (src / "u.data").write_text("1\t10\t4\t881250949\n2\t10\t2\t891717742\n1\t20\t5\t881250950\n")
    (src / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|T8H1N\n")
    (src / "u.genre").write_text("unknown|0\nAction|1\nComedy|2\n\n")
    (src / "u.item").write_bytes(
        "10|Caf\xe9 Society (1995)|01-Jan-1995||http://x|0|1|1\n"
        "20|Heat (1995)|01-Jan-1995||http://y|0|1|0\n".encode("latin-1")
    )
    report = import_movielens(src, tmp_path / "landing")
    assert (report.dataset, report.n_events, report.n_users, report.n_items) == ("ml-100k", 3, 2, 2)
    events = _events(report.events_file)
    assert events[0] == {
        "event_id": "ml-100k-1-10", "user_id": "1", "item_id": "10", "event_type": "rating",
        "event_ts": "1997-12-04T15:55:49Z", "value": 4.0, "session_id": None,
    }  # fmt: skip
    users = pl.read_csv(tmp_path / "landing" / "users.csv", infer_schema=False)
    assert users.rows() == [
        ("1", "M", "18-24", "technician", "8"),
        ("2", "F", "50-55", "other", "T"),
    ]
    items = pl.read_csv(tmp_path / "landing" / "items.csv", infer_schema=False)
    assert items.row(0) == (
        "10",
        "Café Society (1995)",
        "1995",
        "1990s",
        "Action",
        "Action|Comedy",
        "true",
    )


def test_movielens_1m_layout(tmp_path: Path) -> None:
    src = tmp_path / "ml1m"
    src.mkdir()
    (src / "ratings.dat").write_text("1::1193::5::978300760\n2::1193::3::978298413\n")
    (src / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    (src / "movies.dat").write_bytes(
        "1193::One Flew Over the Cuckoo's Nest: A Story (1975)::Drama\n"
        "2::Jumanji (1995)::Adventure|Children's|Fantasy\n".encode("latin-1")
    )
    report = import_movielens(src, tmp_path / "landing")
    assert (report.dataset, report.n_events, report.n_users, report.n_items) == ("ml-1m", 2, 2, 2)
    assert _events(report.events_file)[1]["event_id"] == "ml-1m-2-1193"
    users = pl.read_csv(tmp_path / "landing" / "users.csv", infer_schema=False)
    assert users.rows() == [
        ("1", "F", "Under 18", "K-12 student", "4"),
        ("2", "M", "56+", "self-employed", "7"),
    ]
    items = pl.read_csv(tmp_path / "landing" / "items.csv", infer_schema=False)
    assert items.select("item_id", "year", "category", "tags").rows() == [
        ("1193", "1975", "Drama", "Drama"),
        ("2", "1995", "Adventure", "Adventure|Children's|Fantasy"),
    ]


def test_a_folder_of_neither_layout_says_what_it_expected(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"u\.data.*ratings\.dat"):
        import_movielens(tmp_path, tmp_path / "landing")


def test_a_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "ratings.dat").write_text("1::2::3::4\n1::2::3\n")
    (tmp_path / "users.dat").write_text("1::F::1::10::48067\n")
    (tmp_path / "movies.dat").write_text("2::X (1995)::Drama\n")
    with pytest.raises(ValueError, match=r"ratings\.dat: line 2 has 3 fields, expected 4"):
        import_movielens(tmp_path, tmp_path / "landing")


def test_real_ml_100k_arrives_whole_in_the_lake(tmp_path: Path, ml100k: Path) -> None:
    landing = tmp_path / "landing"
    import_movielens(ml100k, landing)
    paths = Paths(landing, tmp_path / "lake", tmp_path / "wh.duckdb", "sqlite:///unused")
    report = extract(paths, sources=[FileSource()], run_id="r", ingested_at=AT)
    assert (report.rows_read, report.rows_written, report.rows_rejected) == (100_000, 100_000, 0)
    assert (report.n_users, report.n_items) == (943, 1682)
    events = pl.concat(
        pl.DataFrame(lake.read_unit(paths.lake, "raw", u)) for u in lake.units(paths.lake, "raw")
    )
    assert events.height == 100_000
    assert events["event_id"].n_unique() == 100_000
    assert events["user_id"].n_unique() == 943
    assert events["value"].min() == 1.0
    assert events["value"].max() == 5.0
    # importing again gives the same file: extraction skips it
    import_movielens(ml100k, landing)
    again = extract(paths, sources=[FileSource()], run_id="r2", ingested_at=AT)
    assert (again.rows_read, again.files_skipped) == (0, 1)


def test_csv_importer_types_maps_keeps_rejects_and_derives_catalogs(tmp_path: Path) -> None:
    path = tmp_path / "plays.csv"
    path.write_text("listener,track,ts\nL1,T1,1700000000\nL2,T1,1700000100\nL2,T2,yesterday\n")
    source = FileSource(
        name="plays", format="csv",
        mapping=ColumnMapping(event_id=None, user_id="listener", item_id="track", event_ts="ts",
                              ts_format="epoch_s", event_type=None, default_event_type="view",
                              value=None, session_id=None),
    )  # fmt: skip
    report = import_csv(path, source, tmp_path / "landing", now=AT)
    assert (report.n_events, report.n_users, report.n_items, report.n_rejected) == (2, 2, 1, 1)
    events = _events(report.events_file)
    assert [e["event_ts"] for e in events] == [
        "2023-11-14T22:13:20.000000Z",
        "2023-11-14T22:15:00.000000Z",
    ]
    rejected = pl.read_ndjson(tmp_path / "landing" / "rejected" / "plays.jsonl")
    assert rejected["reason"].to_list() == ["unparseable_timestamp"]
    items = pl.read_csv(tmp_path / "landing" / "items.csv")
    assert items.rows() == [("T1", True)]
