"""The validation gate through the CLI: a bad day stops the run with a non-zero exit and a message
naming the failed expectation; a day with a few defects goes through."""

from __future__ import annotations

import gzip
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from flows.cli import main

pytestmark = pytest.mark.slow

LAST_DAY = "2026-10-14"  # the tiny preset covers 2026-10-01 .. 2026-10-14
NEW_DAY = "2026-10-15"


@pytest.fixture(scope="module")
def baseline(
    tmp_path_factory: pytest.TempPathFactory, tiny_landing: Path, prefect_harness: None
) -> Path:
    """A data dir whose 14 days are extracted and validated."""
    root = tmp_path_factory.mktemp("gate") / "data"
    shutil.copytree(tiny_landing, root / "landing")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RECS_DATA_DIR", str(root))
        assert main(["run", "extract"]) == 0
        assert main(["run", "validate"]) == 0
    return root


def _next_day_lines(root: Path) -> list[dict[str, object]]:
    """The last day's valid events, moved one day later with fresh ids."""
    path = root / "landing" / "events" / f"events-{LAST_DAY}.jsonl.gz"
    out = []
    for n, line in enumerate(gzip.decompress(path.read_bytes()).decode().splitlines()):
        try:
            doc = json.loads(line)
        except json.JSONDecodeError:
            continue
        if (
            not str(doc.get("event_ts", "")).startswith(LAST_DAY)
            or doc.get("event_type") == "hover"
        ):
            continue
        if not doc.get("user_id") or not str(doc.get("item_id", "")).startswith("i"):
            continue
        if doc.get("value") is not None and doc["value"] < 0:
            continue
        doc["event_ts"] = doc["event_ts"].replace(LAST_DAY, NEW_DAY)
        doc["event_id"] = f"new-{n}"
        out.append(doc)
    return out


def _run_day(
    baseline: Path, tmp_path: Path, change: Callable[[list[dict[str, object]]], list[str]],
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> tuple[int, str]:  # fmt: skip
    root = tmp_path / "data"
    shutil.copytree(baseline, root)
    lines = change(_next_day_lines(root))
    (root / "landing" / "events" / f"events-{NEW_DAY}.jsonl.gz").write_bytes(
        gzip.compress(("\n".join(lines) + "\n" if lines else "").encode())
    )
    monkeypatch.setenv("RECS_DATA_DIR", str(root))
    assert main(["run", "extract"]) == 0
    capsys.readouterr()
    code = main(["run", "validate"])
    return code, capsys.readouterr().err


def _dump(docs: list[dict[str, object]]) -> list[str]:
    return [json.dumps(d) for d in docs]


def _with_unknown_types(share: float) -> Callable[[list[dict[str, object]]], list[str]]:
    def change(docs: list[dict[str, object]]) -> list[str]:
        n = round(len(docs) * share)
        return _dump([{**d, "event_type": "hover"} if k < n else d for k, d in enumerate(docs)])

    return change


CASES: dict[str, tuple[Callable[[list[dict[str, object]]], list[str]], str]] = {
    "empty day": (lambda docs: [], "expect_table_row_count_to_be_between"),
    "renamed column": (
        lambda docs: _dump(
            [{("type" if k == "event_type" else k): v for k, v in d.items()} for d in docs]
        ),
        "expect_column_values_to_not_be_null on column 'event_type'",
    ),
    "retyped column": (
        lambda docs: _dump([{**d, "event_ts": 1760486400} for d in docs]),
        "expect_table_row_count_to_be_between",  # every record quarantined at extraction
    ),
    "volume drop of 90%": (
        lambda docs: _dump(docs[: len(docs) // 10]),
        "expect_column_values_to_be_between on column 'n_events'",
    ),
    "share over the threshold": (_with_unknown_types(0.05), "exceeds max_quarantine_share"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_day_stops_the_run_naming_the_expectation(
    case: str, baseline: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    change, message = CASES[case]
    code, err = _run_day(baseline, tmp_path, change, monkeypatch, capsys)
    assert code == 1
    assert "validation of" in err, err
    assert message in err, err


def test_a_share_under_the_threshold_continues(
    baseline: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    code, err = _run_day(baseline, tmp_path, _with_unknown_types(0.004), monkeypatch, capsys)
    assert code == 0, err


def test_a_failed_batch_quarantines_nothing_and_stays_pending(
    baseline: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    import duckdb

    code, _ = _run_day(baseline, tmp_path, _with_unknown_types(0.05), monkeypatch, capsys)
    assert code == 1
    warehouse = tmp_path / "data" / "warehouse.duckdb"
    con = duckdb.connect(str(warehouse), read_only=True)
    before = con.execute("select count(*) from quarantine where stage = 'validate'").fetchall()
    con.close()
    # The fix: a higher threshold; the pending batch passes and is quarantined once.
    monkeypatch.setenv("RECS_VALIDATION__MAX_QUARANTINE_SHARE", "0.1")
    assert main(["run", "validate"]) == 0
    con = duckdb.connect(str(warehouse), read_only=True)
    after = con.execute(
        "select count(*), count(distinct raw) from quarantine where stage = 'validate'"
    ).fetchall()[0]
    runs = con.execute("select success from validation_runs order by validated_at").fetchall()
    con.close()
    assert after[0] == after[1]  # no row quarantined twice
    assert after[0] > before[0][0]
    assert [r[0] for r in runs][-2:] == [False, True]


def _failed_batch(err: str) -> str:
    match = re.search(r"validation of batch (\S+):", err)
    assert match, err
    assert f"recs validate accept {match[1]} --reason" in err, err
    return match[1]


def _decisions(root: Path) -> list[tuple[str, str, str]]:
    import duckdb

    con = duckdb.connect(str(root / "warehouse.duckdb"), read_only=True)
    rows = con.execute("select action, unit, reason from batch_decisions order by unit").fetchall()
    con.close()
    return [(str(a), str(u), str(r)) for a, u, r in rows]


def _failed_volume_day(
    baseline: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> tuple[str, Path, str]:  # fmt: skip
    """A new day with 90% less volume, failed at validation: its batch id, data dir and unit."""
    code, err = _run_day(baseline, tmp_path, CASES["volume drop of 90%"][0], monkeypatch, capsys)
    assert code == 1
    return _failed_batch(err), tmp_path / "data", f"dt={NEW_DAY}/landing--events-{NEW_DAY}.parquet"


def test_accept_lets_a_failed_batch_through_and_records_it(
    baseline: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    batch, root, unit = _failed_volume_day(baseline, tmp_path, monkeypatch, capsys)
    assert not (root / "lake" / "clean" / "events" / unit).exists()
    assert main(["validate", "accept", batch, "--reason", "half-day outage, data complete"]) == 0
    assert f"accepted batch {batch}: 1 raw files" in capsys.readouterr().out
    assert (root / "lake" / "clean" / "events" / unit).exists()
    assert _decisions(root) == [("accept", unit, "half-day outage, data complete")]
    assert main(["run", "validate"]) == 0  # nothing pending any more
    assert main(["validate", "accept", batch, "--reason", "again"]) == 1
    assert "none of its raw files is pending" in capsys.readouterr().err


def test_skip_keeps_a_failed_batch_raw_and_out_of_later_runs(
    baseline: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    batch, root, unit = _failed_volume_day(baseline, tmp_path, monkeypatch, capsys)
    assert main(["validate", "skip", batch, "--reason", ""]) == 1
    assert "--reason" in capsys.readouterr().err
    assert main(["validate", "skip", batch, "--reason", "test export, not real traffic"]) == 0
    assert main(["run", "validate"]) == 0  # the skipped file no longer blocks the gate
    assert (root / "lake" / "raw" / "events" / unit).exists()
    assert not (root / "lake" / "clean" / "events" / unit).exists()
    assert _decisions(root) == [("skip", unit, "test export, not real traffic")]
    assert main(["validate", "accept", "no-such-batch", "--reason", "x"]) == 1
    assert f"the latest failed: {batch}" in capsys.readouterr().err
