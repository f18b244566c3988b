"""Three nights on ``tiny`` the way the scheduler runs them, with a retrain-only run and a
three-night backfill in the middle and readers on both stores (``bench/soak.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.soak import run_soak

pytestmark = pytest.mark.slow


def test_three_nights_with_a_backfill_and_readers(tmp_path: Path, prefect_harness: None) -> None:
    rows, readers = run_soak("tiny", 3, tmp_path)
    assert [r.outcome for r in rows] == ["ok"] * len(rows), [r.outcome for r in rows]
    assert [r.kind for r in rows] == [
        "nightly", "nightly", "retrain-only", "backfill", "backfill", "backfill", "nightly",
    ]  # fmt: skip
    nightly = [r for r in rows if r.kind == "nightly"]
    assert all(r.rows_in > 0 and r.published > 0 for r in nightly)  # a new day each night
    assert all(r.published == 0 for r in rows if r.kind == "backfill")  # tonight's keep serving
    for name, (reads, errors) in readers.items():
        assert reads > 0, name
        assert errors == 0, name
