from __future__ import annotations

import gzip
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from features.contracts import EVENTS, QUARANTINE, ContractError
from pipelines.sources.files import read_catalog_csv as read_catalog
from pipelines.sources.readers import FileSource, read_event_file
from tests.factories import json_line

AT = datetime(2026, 11, 1, tzinfo=UTC)
GOOD = {
    "event_id": "e1", "user_id": "u1", "item_id": "i1", "event_type": "view",
    "event_ts": "2026-10-01T10:00:00.250Z", "value": None, "session_id": "s1",
}  # fmt: skip

LINES = [
    json_line(**GOOD),
    '{"event_id": "e2", "user_id": "u1", broken',
    "[1, 2, 3]",
    json_line(**{**GOOD, "event_id": "e4", "event_ts": "yesterday at 5pm"}),
    json_line(**{k: v for k, v in GOOD.items() if k != "event_ts"} | {"event_id": "e5"}),
    json_line(**{**GOOD, "event_id": "e6", "value": "three"}),
    json_line(**{**GOOD, "event_id": " "}),
    json_line(**{**GOOD, "event_id": "e8", "event_type": "rating", "value": 4}),
]
EXPECTED_REASONS = {
    2: "malformed_json",
    3: "not_a_json_object",
    4: "unparseable_timestamp",
    5: "missing_event_ts",
    6: "value_not_a_number",
    7: "missing_event_id",
}


def _write(path: Path, lines: list[str], compress: bool) -> Path:
    data = ("\n".join(lines) + "\n").encode()
    if compress:
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


@pytest.mark.parametrize("name", ["events.jsonl", "events.jsonl.gz"])
def test_every_line_ends_in_events_or_rejects_with_a_reason(tmp_path: Path, name: str) -> None:
    path = _write(tmp_path / name, LINES, compress=name.endswith(".gz"))
    result = read_event_file(path, FileSource(), ingested_at=AT, run_id="run-1")

    assert result.n_read == len(LINES)
    assert result.events.schema == EVENTS
    assert result.events.column("event_id").to_pylist() == ["e1", "e8"]
    assert result.rejects.schema == QUARANTINE
    got = dict(zip(result.rejects.column("line_no").to_pylist(),
                   result.rejects.column("reason").to_pylist(), strict=True))  # fmt: skip
    assert got == EXPECTED_REASONS
    raw = result.rejects.column("raw").to_pylist()
    assert LINES[1] in raw  # the raw payload is kept whole
    assert set(result.rejects.column("source").to_pylist()) == {name}


def test_events_are_typed_with_lineage(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.jsonl", LINES, False)
    result = read_event_file(path, FileSource(), ingested_at=AT, run_id="run-1")
    row = result.events.to_pylist()[0]
    assert row["event_ts"] == datetime(2026, 10, 1, 10, 0, 0, 250000, tzinfo=UTC)
    assert row["source"] == "a.jsonl"
    assert row["ingested_at"] == AT
    assert result.events.to_pylist()[1]["value"] == 4.0


def test_source_files_are_found_by_format(tmp_path: Path) -> None:
    for name in [
        "a.jsonl",
        "b.jsonl.gz",
        "c.ndjson",
        "notes.txt",
        "d.csv",
        "e.csv.gz",
        "f.parquet",
    ]:
        (tmp_path / name).write_text("")
    names = [p.name for p in FileSource().files(tmp_path)]
    assert names == ["a.jsonl", "b.jsonl.gz", "c.ndjson"]
    assert [p.name for p in FileSource(format="csv").files(tmp_path)] == ["d.csv", "e.csv.gz"]
    assert [p.name for p in FileSource(format="parquet", path=tmp_path).files(Path("/x"))] == [
        "f.parquet"
    ]


def test_catalog_is_read_with_string_ids(tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    path.write_text("item_id,category,available\n1,books,true\n2,games,false\n")
    table = read_catalog(path, "item_id", required=("available",))
    assert table.column("item_id").type == pa.string()
    assert table.column("item_id").to_pylist() == ["1", "2"]


def test_catalog_without_its_id_column_names_file_and_column(tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    path.write_text("id,country\nu1,US\n")
    with pytest.raises(ContractError, match="missing column 'user_id'") as info:
        read_catalog(path, "user_id")
    assert str(path) in str(info.value)


def test_catalog_ids_are_trimmed_and_blank_ones_become_null(tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    path.write_text("user_id,country\n u1 ,US\n  ,DE\n")
    assert read_catalog(path, "user_id").column("user_id").to_pylist() == ["u1", None]
