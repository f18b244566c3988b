"""The PostgreSQL source against the real server: watermark, lookback, backfill, idempotence."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import adbc_driver_postgresql.dbapi as postgresql
import polars as pl
import pytest

from pipelines.extract import extract
from pipelines.sources.readers import ColumnMapping, PostgresSource
from pipelines.stores import Stores as Paths
from pipelines.stores import lake

pytestmark = pytest.mark.postgres


def _ts(day: int, hour: int) -> datetime:
    return datetime(2026, 10, day, hour, tzinfo=UTC)


def _insert(url: str, rows: list[tuple[str, str, str, str, datetime, float | None]]) -> None:
    with postgresql.connect(url) as conn, conn.cursor() as cur:
        for row in rows:
            cur.execute("insert into app_events values ($1, $2, $3, $4, $5, $6)", row)
        conn.commit()


@pytest.fixture
def setup(pg_schema_url: str, tmp_path: Path) -> tuple[Paths, PostgresSource]:
    with postgresql.connect(pg_schema_url) as conn, conn.cursor() as cur:
        cur.execute(
            "create table app_events (id text, uid text, iid text, kind text, "
            "happened_at timestamptz, amount double precision)"
        )
        conn.commit()
    _insert(
        pg_schema_url,
        [
            ("a", "u1", "i1", "view", _ts(1, 9), None),
            ("b", "u1", "i2", "buy", _ts(2, 9), 2.0),
            ("c", "u2", "i1", "view", _ts(3, 9), None),
            ("d", "u2", "i2", "view", _ts(3, 23), None),  # after the first run: not yet
        ],
    )
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "users.csv").write_text("user_id\nu1\nu2\n")
    (landing / "items.csv").write_text("item_id,available\ni1,true\ni2,true\n")
    paths = Paths(landing, tmp_path / "lake", tmp_path / "wh.duckdb", "sqlite:///unused")
    source = PostgresSource(
        name="app",
        url=pg_schema_url,
        table="app_events",
        lookback_hours=24,
        batch_rows=1000,
        mapping=ColumnMapping(
            event_id="id", user_id="uid", item_id="iid", event_type="kind",
            event_ts="happened_at", value="amount", session_id="",
            event_types={"buy": "purchase"},
        ),
    )  # fmt: skip
    return paths, source


def _lake_ids(paths: Paths) -> dict[str, list[str]]:
    out = {}
    for unit in sorted(lake.units(paths.lake, "raw")):
        out[unit] = sorted(lake.read_unit(paths.lake, "raw", unit).column("event_id").to_pylist())
    return out


def _run(
    paths: Paths, source: PostgresSource, at: datetime, *, since: date | None = None,
    until: date | None = None,
) -> None:  # fmt: skip
    extract(paths, sources=[source], run_id=f"r{at:%d%H}", ingested_at=at, since=since, until=until)


def test_watermark_lookback_backfill_and_reruns(setup: tuple[Paths, PostgresSource]) -> None:
    paths, source = setup
    _run(paths, source, _ts(3, 12))
    assert _lake_ids(paths) == {
        "dt=2026-10-01/app.parquet": ["a"],
        "dt=2026-10-02/app.parquet": ["b"],
        "dt=2026-10-03/app.parquet": ["c"],
    }
    first = lake.read_unit(paths.lake, "raw", "dt=2026-10-02/app.parquet").to_pylist()[0]
    assert first["event_type"] == "purchase"
    assert first["value"] == 2.0
    assert first["source"] == "postgres:app_events"

    # Late arrivals: one inside the lookback (day 3), one far outside it (day 1).
    _insert(source.url, [("e", "u1", "i1", "view", _ts(3, 10), None),
                         ("f", "u2", "i2", "view", _ts(1, 10), None)])  # fmt: skip
    _run(paths, source, _ts(4, 12))
    after = _lake_ids(paths)
    # window: from midnight of (watermark day 3 12:00 - 24 h) = day 2, 00:00
    assert after["dt=2026-10-03/app.parquet"] == ["c", "d", "e"]
    assert after["dt=2026-10-01/app.parquet"] == ["a"]  # outside the lookback: not re-read

    # The same run again changes nothing (each day in the window is rewritten whole).
    _run(paths, source, _ts(4, 12))
    assert _lake_ids(paths) == after

    # A backfill of day 1 picks the far-late event up, and keeps the watermark.
    _run(paths, source, _ts(4, 13), since=date(2026, 10, 1), until=date(2026, 10, 1))
    assert _lake_ids(paths)["dt=2026-10-01/app.parquet"] == ["a", "f"]
    import duckdb

    con = duckdb.connect(str(paths.warehouse), read_only=True)
    marks = pl.DataFrame(
        con.sql("select backfill, watermark_low, watermark_high, rows_read from extractions "
                "order by extracted_at").to_arrow_table()
    )  # fmt: skip
    con.close()
    # run 1: a b c; run 2: b c d e (from day 2); run 3: c d e (from day 3); backfill: a f
    assert marks["rows_read"].to_list() == [3, 4, 3, 2]
    assert marks["backfill"].to_list() == [False, False, False, True]
    assert marks["watermark_low"][1] == _ts(2, 0)  # midnight of (day 3 12:00 - 24 h)


def test_untypeable_rows_are_quarantined_not_lost(setup: tuple[Paths, PostgresSource]) -> None:
    paths, source = setup
    _insert(source.url, [("", "u1", "i1", "view", _ts(2, 5), None)])
    _run(paths, source, _ts(3, 12))
    import duckdb

    con = duckdb.connect(str(paths.warehouse), read_only=True)
    rows = con.sql("select reason, source, raw from quarantine").fetchall()
    read, written, rejected = con.sql(
        "select rows_read, rows_written, rows_rejected from extractions"
    ).fetchall()[0]
    con.close()
    assert [(r, s) for r, s, _ in rows] == [("missing_event_id", "postgres:app_events")]
    assert '"user_id": "u1"' in rows[0][2]
    assert (read, written, rejected) == (4, 3, 1)


def test_a_row_rejected_in_overlapping_windows_is_one_reject(
    setup: tuple[Paths, PostgresSource],
) -> None:
    """The lookback re-reads the last day, a backfill re-reads its days: the bad row in both is
    quarantined once (keyed by source and raw row), not once per window."""
    paths, source = setup
    _insert(source.url, [("", "u1", "i1", "view", _ts(3, 5), None)])
    _run(paths, source, _ts(3, 12))
    _run(paths, source, _ts(4, 12))  # from day 2: the bad row is read again
    _run(paths, source, _ts(4, 13), since=date(2026, 10, 3), until=date(2026, 10, 3))
    import duckdb

    con = duckdb.connect(str(paths.warehouse), read_only=True)
    rows = con.sql("select reason from quarantine").fetchall()
    reads = con.sql("select rows_rejected from extractions order by extracted_at").fetchall()
    con.close()
    assert [r for (r,) in reads] == [1, 1, 1]  # every window saw it
    assert rows == [("missing_event_id",)]
