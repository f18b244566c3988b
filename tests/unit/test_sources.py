"""Each file format, compressed or not, and a column-mapped export, read to the same events."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from pipelines.sources.readers import ColumnMapping, FileSource, read_event_file

AT = datetime(2026, 11, 1, tzinfo=UTC)
ROWS = [
    {"event_id": "e1", "user_id": "u1", "item_id": "i1", "event_type": "view",
     "event_ts": "2026-10-01T10:00:00Z", "value": None, "session_id": "s1"},
    {"event_id": "e2", "user_id": "u2", "item_id": "i2", "event_type": "rating",
     "event_ts": "2026-10-01T11:30:00Z", "value": 4.0, "session_id": None},
    {"event_id": "e3", "user_id": "u2", "item_id": "i3", "event_type": "click",
     "event_ts": "not a time", "value": None, "session_id": None},
]  # fmt: skip


def _write(frame: pl.DataFrame, path: Path, fmt: str) -> Path:
    if fmt == "parquet":
        frame.write_parquet(path)
        return path
    text = frame.write_ndjson() if fmt == "jsonl" else frame.write_csv()
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("fmt", "name"),
    [
        ("jsonl", "x.jsonl"),
        ("jsonl", "x.jsonl.gz"),
        ("csv", "x.csv"),
        ("csv", "x.csv.gz"),
        ("parquet", "x.parquet"),
    ],
)
def test_every_format_reads_to_the_same_events(tmp_path: Path, fmt: str, name: str) -> None:
    path = _write(pl.DataFrame(ROWS), tmp_path / name, fmt)
    typed = read_event_file(path, FileSource(format=fmt), ingested_at=AT, run_id="r")
    events = typed.events.to_pylist()
    assert [e["event_id"] for e in events] == ["e1", "e2"]
    assert events[0]["event_ts"] == datetime(2026, 10, 1, 10, tzinfo=UTC)
    assert events[1]["value"] == 4.0
    assert events[0]["value"] is None
    assert typed.rejects.column("reason").to_pylist() == ["unparseable_timestamp"]
    assert typed.rejects.column("event_id").to_pylist() == ["e3"]
    assert typed.n_read == 3


def test_column_mapped_export_with_its_own_names_formats_and_types(tmp_path: Path) -> None:
    path = tmp_path / "shop.csv"
    path.write_text(
        "customer;sku;action;when;qty\n"
        "c1;p1;PAGE_VIEW;01/10/2026 10:00;\n"
        "c1;p1;BUY;01/10/2026 10:05;2\n"
        "c2;p9;WISHLIST;02/10/2026 08:00;\n"
        "c2;p9;BUY;32/10/2026 08:00;1\n"
        "c3;p1;BUY\n"
    )
    source = FileSource(
        name="shop",
        format="csv",
        csv_delimiter=";",
        mapping=ColumnMapping(
            event_id=None, user_id="customer", item_id="sku", event_type="action",
            event_ts="when", ts_format="%d/%m/%Y %H:%M", value="qty", session_id=None,
            event_types={"PAGE_VIEW": "view", "BUY": "purchase"},
        ),
    )  # fmt: skip
    typed = read_event_file(path, source, ingested_at=AT, run_id="r")
    events = pl.DataFrame(typed.events)
    assert events.select("user_id", "item_id", "event_type", "value").rows() == [
        ("c1", "p1", "view", None),
        ("c1", "p1", "purchase", 2.0),
        ("c2", "p9", "WISHLIST", None),  # unmapped types pass through; validation judges them
    ]
    assert events["event_ts"][1] == datetime(2026, 10, 1, 10, 5, tzinfo=UTC)
    # derived ids are deterministic: the same export read twice gives the same ids
    again = read_event_file(path, source, ingested_at=AT, run_id="r2")
    assert again.events.column("event_id").equals(typed.events.column("event_id"))
    assert events["event_id"].str.starts_with("shop-").all()
    reasons = sorted(typed.rejects.column("reason").to_pylist())
    assert reasons == ["malformed_csv: MISSING COLUMNS", "unparseable_timestamp"]
    assert typed.n_read == 5


def test_default_event_type_and_epoch_timestamps(tmp_path: Path) -> None:
    path = tmp_path / "ratings.parquet"
    pl.DataFrame(
        {"u": [1, 2], "i": [10, 20], "t": [881250949, 891717742], "r": [3, 5]}
    ).write_parquet(path)
    mapping = ColumnMapping(
        event_id=None, user_id="u", item_id="i", event_type=None, default_event_type="rating",
        event_ts="t", ts_format="epoch_s", value="r", session_id=None,
    )  # fmt: skip
    typed = read_event_file(
        path, FileSource(format="parquet", mapping=mapping), ingested_at=AT, run_id="r"
    )
    rows = typed.events.select(
        ["user_id", "item_id", "event_type", "event_ts", "value"]
    ).to_pylist()
    assert rows[0] == {
        "user_id": "1", "item_id": "10", "event_type": "rating",
        "event_ts": datetime(1997, 12, 4, 15, 55, 49, tzinfo=UTC), "value": 3.0,
    }  # fmt: skip


def test_bad_column_name_in_mapping_is_refused() -> None:
    with pytest.raises(ValueError, match="column name"):
        read_event_file(
            Path("/dev/null"),
            FileSource(mapping=ColumnMapping(user_id='x"; drop table')),
            ingested_at=AT,
            run_id="r",
        )
