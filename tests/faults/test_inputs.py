"""Bad inputs an unlucky export produces, each a case through the real extract and validate
stages: every line read ends as an event or a reject (read = written + rejected; written =
clean + quarantined), with the expected reason; ids are data, kept byte for byte through the
lake, the warehouse and the serving store. The unreadable files (truncated gzip, latin-1, a
50 MB line, empty files, a BOM) are in ``test_unreadable.py``, timestamps in
``test_timestamps.py``, names in ``test_names.py``."""

from __future__ import annotations

import csv
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bench import faults
from features.contracts import ContractError
from features.signal import SignalParams
from models.baselines import PopularityParams
from models.ease import EASEParams
from pipelines.extract import extract
from pipelines.features import build_features
from pipelines.publish import publish
from pipelines.score import score
from pipelines.sources.readers import FileSource
from pipelines.stores.reader import get_recommendations
from pipelines.stores.tracking import Tracking
from pipelines.suites.events import ValidationThresholds
from pipelines.validate import validate

AT = datetime(2026, 10, 20, tzinfo=UTC)
CASES = sorted(faults.input_cases(["u"], ["i", "j"]))


@pytest.mark.parametrize("case", CASES)
def test_each_bad_input_ends_where_it_should_and_nothing_is_lost(
    tmp_path: Path, tiny_landing: Path, case: str
) -> None:
    outcome = faults.run_input(tmp_path, tiny_landing, case)
    bad, _ = faults.input_cases(["u"], ["i", "j"])[case]
    assert outcome.read == faults.GOOD_LINES + len(bad)
    assert outcome.lost == 0
    assert outcome.wrong == {}


def test_odd_ids_survive_byte_for_byte_to_the_serving_store(
    tmp_path: Path, tiny_landing: Path
) -> None:
    items = faults.catalog_ids(tiny_landing, "items", "item_id")
    bad = [
        json.dumps({**faults.event(910 + n, odd, items[n])})
        for n, odd in enumerate(faults.ODD_IDS.values())
    ]
    stores = faults.input_world(tmp_path, tiny_landing, bad)
    extract(stores, sources=[FileSource()], run_id="r", ingested_at=AT)
    validate(stores, run_id="r", now=AT, thresholds=ValidationThresholds())
    as_of = AT - timedelta(days=1)
    build_features(stores, as_of=as_of, holdout_days=2, top_k=5, signal=SignalParams(),
                   popularity=PopularityParams())  # fmt: skip
    tracking = Tracking(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "art", "exp", "recs")
    report = score(
        stores, tracking, k=5, popularity=PopularityParams(), ease=EASEParams(), run_id="s",
        as_of=as_of, generated_at=AT, ttl=timedelta(hours=1), num_threads=1,
    )  # fmt: skip
    publish(stores, recommendations=report.path, clock=lambda: AT)
    with sqlite3.connect(tmp_path / "serving.db") as db:
        for n, odd in enumerate(faults.ODD_IDS.values()):
            rows = db.execute(
                "select item_id from recommendations where user_id = ? order by rank", (odd,)
            ).fetchall()
            assert len(rows) == 5, odd[:40]
            assert (items[n],) not in rows  # their own history is excluded: it is their row
            served = get_recommendations(stores.serving_url, odd, k=5)
            assert [r.item_id for r in served] == [r[0] for r in rows]


def test_a_catalog_missing_a_column_is_refused_naming_the_file_and_column(
    tmp_path: Path, tiny_landing: Path
) -> None:
    stores = faults.input_world(tmp_path, tiny_landing, [])
    items = tmp_path / "landing" / "items.csv"
    with items.open() as f:
        rows = list(csv.DictReader(f))
    with items.open("w", newline="") as f:
        writer = csv.DictWriter(f, [c for c in rows[0] if c != "available"])
        writer.writeheader()
        writer.writerows({k: v for k, v in r.items() if k != "available"} for r in rows)
    with pytest.raises(ContractError) as raised:
        extract(stores, sources=[FileSource()], run_id="r", ingested_at=AT)
    message = str(raised.value)
    assert str(items) in message
    assert "available" in message
    assert "\n" not in message
    assert not stores.lake.exists() or not list(stores.lake.rglob("*.parquet"))
