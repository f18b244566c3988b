"""Extraction throughput: 6M events into the raw lake, from gzipped JSON lines and from PostgreSQL.

Each measurement runs in a fresh child process (its own peak RSS). The reference for each source
is measured in the same run: reading the same bytes without typing or writing (DuckDB reading the
gzipped lines; ADBC fetching the rows). Targets (issue 3): files < 30 s, PostgreSQL < 60 s, peak
memory < 2 GiB.

    python -m bench.extract [--preset large] [--workdir /tmp/recs-bench-extract]
"""

from __future__ import annotations

import argparse
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.nightly import _in_child, _rss_mb

PG_URL = "postgresql://root@127.0.0.1:5432/test"
TABLE = "bench_app_events"


def _generate(preset: str, root: str, queue: Any) -> None:
    from pipelines.sources.synthetic import PRESETS, write_landing

    params = PRESETS[preset]
    start = datetime.now(UTC).date() - timedelta(days=params.days)
    write_landing(
        params.model_copy(update={"start": start, "defect_share": 0.0}), Path(root) / "landing"
    )
    queue.put(("ok", None))


def _load_postgres(root: str, queue: Any) -> None:
    """The generated events into a typed PostgreSQL table, as an application database holds them."""
    import adbc_driver_postgresql.dbapi as postgresql
    import duckdb

    con = duckdb.connect()
    con.execute("set TimeZone = 'UTC'")
    table = con.sql(
        "select event_id, user_id, item_id, event_type, event_ts::timestamptz as event_ts, "
        "value::double as value, session_id from read_json($p, format = 'newline_delimited', "
        "columns = {event_id: 'VARCHAR', user_id: 'VARCHAR', item_id: 'VARCHAR', "
        "event_type: 'VARCHAR', event_ts: 'VARCHAR', value: 'DOUBLE', session_id: 'VARCHAR'})",
        params={"p": str(Path(root) / "landing" / "events" / "*.jsonl.gz")},
    ).to_arrow_table()
    with postgresql.connect(PG_URL) as conn, conn.cursor() as cur:
        cur.execute(f"drop table if exists {TABLE}")
        cur.adbc_ingest(TABLE, table, mode="create")
        cur.execute(f"create index on {TABLE} (event_ts)")
        conn.commit()
    queue.put(("ok", table.num_rows))


def _measure(what: str, root: str, queue: Any) -> None:
    from pipelines.extract import extract
    from pipelines.sources.readers import ColumnMapping, FileSource, PostgresSource
    from pipelines.stores import Stores as Paths

    base = Path(root)
    paths = Paths(
        base / "landing", base / f"lake-{what}", base / f"wh-{what}.duckdb", "sqlite:///x"
    )
    shutil.rmtree(paths.lake, ignore_errors=True)
    paths.warehouse.unlink(missing_ok=True)
    now = datetime.now(UTC)
    start = time.perf_counter()
    rows = 0
    if what == "files":
        rows = extract(paths, sources=[FileSource()], run_id="b", ingested_at=now).rows_written
    elif what == "postgres":
        source = PostgresSource(name="app", url=PG_URL, table=TABLE, mapping=ColumnMapping())
        rows = extract(paths, sources=[source], run_id="b", ingested_at=now).rows_written
    elif what == "files-floor":
        import duckdb

        rows = duckdb.execute(
            "select count(*) from read_csv($p, columns = {'line': 'VARCHAR'}, delim = E'\\x01', "
            "quote = '', escape = '', header = false, auto_detect = false)",
            {"p": str(paths.landing / "events" / "*.jsonl.gz")},
        ).fetchall()[0][0]
    elif what == "postgres-floor":
        import adbc_driver_postgresql.dbapi as postgresql

        with postgresql.connect(PG_URL) as conn, conn.cursor() as cur:
            cur.execute(f"select * from {TABLE}")
            rows = sum(b.num_rows for b in cur.fetch_record_batch())
    queue.put(("m", (what, time.perf_counter() - start, rows, _rss_mb())))


def run(preset: str, workdir: Path) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    if not (workdir / "landing" / "events").exists():
        _in_child(_generate, preset, str(workdir))
    _in_child(_load_postgres, str(workdir))
    results = {}
    for what in ("files-floor", "files", "postgres-floor", "postgres"):
        ((_, (name, secs, rows, peak)),) = _in_child(_measure, what, str(workdir))
        results[name] = (secs, rows, peak)
    print(f"\n## extraction into the raw lake, preset {preset!r}\n")
    print("| source | seconds | rows | rows/s | peak RSS MB | vs floor | target |")
    print("|---|--:|--:|--:|--:|--:|---|")
    for name, floor, target in (
        ("files", "files-floor", "< 30 s"),
        ("postgres", "postgres-floor", "< 60 s"),
    ):
        for what in (floor, name):
            secs, rows, peak = results[what]
            ratio = f"{secs / results[floor][0]:.1f}x" if what == name else "1.0x"
            print(f"| {what} | {secs:.1f} | {rows:,} | {rows / secs:,.0f} | {peak:.0f} | {ratio} | "
                  f"{target if what == name else 'read only'} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="large", choices=["tiny", "demo", "large"])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/recs-bench-extract"))
    args = parser.parse_args()
    run(args.preset, args.workdir / args.preset)


if __name__ == "__main__":
    main()
