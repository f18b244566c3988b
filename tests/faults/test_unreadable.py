"""What cannot be read is quarantined with the file and line, and the rest goes on: a truncated
gzip, a line that is not UTF-8, a 50 MB line, an empty file, a BOM, a CSV or Parquet file that
is not one. Every line read ends as an event or a reject (read = written + rejected)."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipelines.sources.readers import FileSource, read_event_file

AT = datetime(2026, 11, 1, tzinfo=UTC)
GOOD = [
    json.dumps({"event_id": f"e{i}", "user_id": "u1", "item_id": "i1", "event_type": "view",
                "event_ts": "2026-10-01T10:00:00Z"})
    for i in range(200)
]  # fmt: skip


def _lines(lines: list[bytes]) -> bytes:
    return b"".join(x + b"\n" for x in lines)


GOOD_BYTES = [x.encode() for x in GOOD]

# name -> (file name, bytes, expected (line_no, reason) rejects, events kept)
CASES: dict[str, Callable[[], tuple[str, bytes, list[tuple[int | None, str]], int]]] = {
    "truncated gzip": lambda: (
        "t.jsonl.gz", gzip.compress(_lines(GOOD_BYTES))[:-40], [(None, "truncated_file")], -1,
    ),
    "latin-1 line": lambda: (
        "l.jsonl",
        _lines([*GOOD_BYTES[:50], '{"event_id": "x", "user_id": "Jos\xe9"}'.encode("latin-1"),
                *GOOD_BYTES[50:]]),
        [(51, "invalid_utf8")], 200,
    ),
    "50 MB line": lambda: (
        "b.jsonl", _lines([*GOOD_BYTES[:10], b'{"event_id": "' + b"a" * (50 << 20) + b'"}',
                           *GOOD_BYTES[10:]]),
        [(11, "line_too_long")], 200,
    ),
    "empty file": lambda: ("e.jsonl", b"", [], 0),
    "byte order mark": lambda: ("bom.jsonl", b"\xef\xbb\xbf" + _lines(GOOD_BYTES), [], 200),
    "gzip of nothing": lambda: ("z.jsonl.gz", gzip.compress(b""), [], 0),
    "not gzip at all": lambda: ("n.jsonl.gz", b"not gzip\n", [(None, "unreadable_stream")], 0),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_an_unreadable_part_is_quarantined_and_the_rest_goes_on(tmp_path: Path, case: str) -> None:
    name, data, expected, kept = CASES[case]()
    path = tmp_path / name
    path.write_bytes(data)
    typed = read_event_file(path, FileSource(), ingested_at=AT, run_id="r")
    got = list(zip(typed.rejects.column("line_no").to_pylist(),
                   typed.rejects.column("reason").to_pylist(), strict=True))  # fmt: skip
    if expected and expected[0][0] is None:  # a broken stream: where it broke depends on bytes
        assert [r for _, r in got] == [r for _, r in expected], got
        assert typed.events.num_rows < len(GOOD)
    else:
        assert got == expected, got
        assert typed.events.num_rows == kept
    assert typed.n_read == typed.events.num_rows + typed.rejects.num_rows
    assert set(typed.rejects.column("source").to_pylist()) <= {name}
    for raw in typed.rejects.column("raw").to_pylist():
        assert raw is not None
        assert len(raw) < 2000  # a 50 MB line is kept by its head only


def test_a_csv_that_is_not_readable_is_quarantined_whole(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv.gz"
    path.write_bytes(b"\x1f\x8b not really gzip")
    typed = read_event_file(path, FileSource(name="csv", format="csv"), ingested_at=AT, run_id="r")
    assert typed.events.num_rows == 0
    assert typed.rejects.column("reason").to_pylist() == ["unreadable_file"]
    assert typed.rejects.column("raw").to_pylist()[0].startswith("bad.csv.gz: ")


def test_a_ragged_catalog_row_is_refused_naming_the_file_and_its_lines(tmp_path: Path) -> None:
    from features.contracts import ContractError
    from pipelines.sources.files import read_catalog_csv

    path = tmp_path / "users.csv"
    path.write_text("user_id,country,age_band\nu1,ES,18-24\nu2,GB\nu3,US,25-34,extra\n")
    with pytest.raises(ContractError) as raised:
        read_catalog_csv(path, "user_id")
    message = str(raised.value)
    assert message.startswith(f"{path}: line 3: expected 3 columns, got 2: 'u2,GB'")
    assert "line 4: expected 3 columns, got 4" in message
    assert "\n" not in message  # one line
