"""Timestamps no calendar or clock holds are refused at extraction; implausible ones (before
``valid_from``, 1990 by default, or after now + skew) are quarantined at validation. Nothing
crashes, nothing makes a partition, every row is accounted for."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipelines.sources.readers import FileSource, read_event_file
from pipelines.suites.events import ValidationParams, validate_events
from tests.factories import json_line

AT = datetime(2026, 11, 1, tzinfo=UTC)
GOOD = {
    "event_id": "e0", "user_id": "u1", "item_id": "i1", "event_type": "view",
    "event_ts": "2026-10-01T10:00:00Z", "value": None, "session_id": "s1",
}  # fmt: skip

# event_ts -> (stage that stops it: extract, validate or none, reason or "clean")
CASES = {
    "0001-01-01T00:00:00Z": ("extract", "timestamp_out_of_range"),
    "-0044-03-15T12:00:00Z": ("extract", "timestamp_out_of_range"),
    "1899-12-31T23:59:59Z": ("extract", "timestamp_out_of_range"),
    "1900-01-01T00:00:00Z": ("validate", "timestamp_out_of_range"),
    "1970-01-01T00:00:00Z": ("validate", "timestamp_out_of_range"),
    "1989-12-31T23:59:59Z": ("validate", "timestamp_out_of_range"),
    "1990-01-01T00:00:00Z": ("none", "clean"),
    "1997-09-20T21:45:32Z": ("none", "clean"),  # MovieLens 100K's first rating
    "2026-10-31T23:59:59Z": ("none", "clean"),
    "2026-11-01T00:09:00Z": ("none", "clean"),  # within the clock skew
    "2026-11-01T00:11:00Z": ("validate", "future_timestamp"),
    "2199-01-01T00:00:00Z": ("validate", "future_timestamp"),
    "9999-12-31T23:59:59Z": ("extract", "timestamp_out_of_range"),
    "+275760-09-13T00:00:00Z": ("extract", "unparseable_timestamp"),
}


@pytest.mark.parametrize("ts", sorted(CASES))
def test_each_timestamp_ends_where_it_should(tmp_path: Path, ts: str) -> None:
    path = tmp_path / "events.jsonl"
    lines = [json_line(**{**GOOD, "event_id": f"e{n}"}) for n in range(20)]
    lines.append(json_line(**{**GOOD, "event_id": "odd", "event_ts": ts}))
    path.write_text("\n".join(lines) + "\n")
    typed = read_event_file(path, FileSource(), ingested_at=AT, run_id="r")
    assert typed.n_read == len(lines)
    rejected = dict(
        zip(typed.rejects.column("event_id").to_pylist(),
            typed.rejects.column("reason").to_pylist(), strict=True)
    )  # fmt: skip
    stage, expected = CASES[ts]
    assert rejected.get("odd") == (expected if stage == "extract" else None)
    if stage == "extract":
        return
    params = ValidationParams(window_end=AT.replace(minute=10), known_items=frozenset({"i1"}))
    result = validate_events(typed.events, params)  # does not raise
    assert result.clean.height + result.quarantined.height == typed.events.num_rows
    odd = result.quarantined.filter(result.quarantined["event_id"] == "odd")
    if expected == "clean":
        assert odd.height == 0
        assert "odd" in result.clean["event_id"].to_list()
    else:
        assert odd["reason"].to_list() == [expected]
