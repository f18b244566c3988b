"""The soak: the scheduled nightly, night after night, with readers on both stores.

A world is generated (a preset of the synthetic generator); its first days land at once, then
each night one more day's export lands, with the usual defect share (2199-dated rows included),
and the nightly runs at 02:00 after that day. One line in ``LATE_EVERY`` of each day's export
arrives a night late, as its own file (``events-<day>-late.jsonl.gz``); the catalogs grow night
by night (users appear on their signup date, items on their release date). Midway, a
retrain-only run (the ``retrain`` flow) and a three-night backfill of past nights (the
``backfill`` flow: re-extracts its window; lists kept in the lake, not published over tonight's).
Throughout, one process reads the serving store (a connection per read, a random user each time)
and another the warehouse's read copy. Prints one row per night. Nothing is asserted here;
``tests/flows/test_soak.py`` runs three nights on ``tiny``.

Run: ``python -m bench.soak --preset demo --nights 14``.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

READ_SERVING = """
import random, sqlite3, sys, time
from pathlib import Path
path, stop = sys.argv[1], Path(sys.argv[2])
reads = errors = 0
while not stop.exists():
    if Path(path).exists():
        try:
            db = sqlite3.connect(path, timeout=10)
            users = db.execute("select user_id from recommendations limit 50").fetchall()
            if users:
                u = random.choice(users)[0]
                rows = db.execute(
                    "select item_id from recommendations where user_id = ? order by rank", (u,)
                ).fetchall()
                assert rows, u
            db.close()
            reads += 1
        except Exception as exc:
            if "no such table" not in str(exc):
                errors += 1
                print("serving reader:", repr(exc), file=sys.stderr)
    time.sleep(0.2)
print(reads, errors)
"""

READ_WAREHOUSE = """
import sys, time, duckdb
from pathlib import Path
path, stop = sys.argv[1], Path(sys.argv[2])
reads = errors = 0
while not stop.exists():
    if Path(path).exists():
        try:
            con = duckdb.connect(path, read_only=True)
            con.execute("select count(*) from information_schema.tables").fetchall()
            con.close()
            reads += 1
        except Exception as exc:
            errors += 1
            print("warehouse reader:", repr(exc), file=sys.stderr)
    time.sleep(0.5)
print(reads, errors)
"""


@dataclass
class Night:
    """One row of the soak's table."""

    night: str
    kind: str
    outcome: str
    rows_in: int = 0
    quarantined: int = 0
    decision: str = ""
    published: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


LATE_EVERY = 30
"""One line in this many of a day's export arrives the night after (about 3%)."""


def _write_gz(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(gzip.compress(b"".join(lines), mtime=0))


def _reveal(world: Path, landing: Path, day: date, late: bool) -> list[bytes]:
    """Land ``day``'s export; with ``late``, hold back one line in :data:`LATE_EVERY` and return
    them (they land the next night)."""
    name = f"events-{day.isoformat()}.jsonl.gz"
    if not late:
        shutil.copy(world / "events" / name, landing / "events" / name)
        return []
    lines = gzip.decompress((world / "events" / name).read_bytes()).splitlines(keepends=True)
    _write_gz(landing / "events" / name, [x for n, x in enumerate(lines) if n % LATE_EVERY])
    return [x for n, x in enumerate(lines) if not n % LATE_EVERY]


def _grow_catalogs(world: Path, landing: Path, day: date) -> None:
    """The catalogs as exported on ``day``: users signed up and items released by then."""
    for name, column in (("users.csv", "signup_date"), ("items.csv", "release_date")):
        with open(world / name, newline="") as f:
            reader = csv.DictReader(f)
            rows = [r for r in reader if r[column] <= day.isoformat()]
            fields = reader.fieldnames or []
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        tmp = landing / f".{name}.tmp"
        tmp.write_text(out.getvalue())
        tmp.replace(landing / name)


def _decision(train: Any) -> str:
    if train.promoted:
        return f"promoted v{train.model_version}"
    return f"kept ({train.decision.split(':', 1)[0]}) v{train.model_version}"


def run_soak(
    preset: str, nights: int, root: Path, seed: int = 42
) -> tuple[list[Night], dict[str, tuple[int, int]]]:
    """Run ``nights`` nights in ``root``; the rows and (reads, errors) per reader."""
    from pipelines.sources.synthetic import PRESETS, write_landing

    params = PRESETS[preset].model_copy(update={"seed": seed})
    world = root / "world"
    write_landing(params, world)
    data = root / "data"
    landing = data / "landing"
    (landing / "events").mkdir(parents=True)
    if not 1 <= nights < params.days:
        raise ValueError(f"nights: expected 1..{params.days - 1} for preset {preset!r}")
    first = params.days - nights + 1  # days landed before the first night
    days = [params.start + timedelta(days=d) for d in range(params.days)]
    for day in days[: first - 1]:
        _reveal(world, landing, day, late=False)
    env = {
        "RECS_DATA_DIR": str(data),
        "RECS_MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "RECS_MLFLOW_ARTIFACTS_DIR": str(root / "artifacts"),
        "RECS_HOLDOUT_DAYS": "3",
    }
    saved = {key: os.environ.get(key) for key in [*env, "RECS_CLOCK"]}
    os.environ.update(env)
    stop = root / "stop"
    readers = {
        "serving": subprocess.Popen(
            [sys.executable, "-c", READ_SERVING, str(data / "serving.sqlite"), str(stop)],
            stdout=subprocess.PIPE, text=True,
        ),
        "warehouse": subprocess.Popen(
            [sys.executable, "-c", READ_WAREHOUSE, str(data / "warehouse.read.duckdb"), str(stop)],
            stdout=subprocess.PIPE, text=True,
        ),
    }  # fmt: skip
    rows: list[Night] = []

    def night_at(day: date) -> datetime:
        return datetime(day.year, day.month, day.day, 2, tzinfo=UTC) + timedelta(days=1)

    try:
        held: list[bytes] = []
        for n, day in enumerate(days[first - 1 :]):
            if held:  # yesterday's late lines
                _write_gz(
                    landing / "events" / f"events-{day - timedelta(days=1)}-late.jsonl.gz", held
                )
            held = _reveal(world, landing, day, late=True)
            _grow_catalogs(world, landing, day)
            as_of = night_at(day)
            rows.append(_run_night(f"{as_of:%Y-%m-%d}", "nightly", _nightly(as_of, True, as_of)))
            if n == nights // 2:
                os.environ["RECS_CLOCK"] = as_of.isoformat()
                rows += _run_other(f"{as_of:%Y-%m-%d}", "retrain-only", _retrain(as_of))
                rows += _run_other("", "backfill", _backfill(day - timedelta(days=3), day))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        stop.touch()
        counts = {}
        for name, proc in readers.items():
            out, _ = proc.communicate(timeout=60)
            fields = out.split()
            # A reader that died says nothing: count it as one error, not as a clean run.
            counts[name] = (int(fields[0]), int(fields[1])) if len(fields) == 2 else (0, 1)
    return rows, counts


def _nightly(as_of: datetime, publish: bool, now: datetime) -> Callable[[], dict[str, Any]]:
    def run() -> dict[str, Any]:
        from flows.nightly import nightly_flow

        os.environ["RECS_CLOCK"] = now.isoformat()  # the scheduler's clock: that night, 02:00
        result: dict[str, Any] = nightly_flow(as_of=as_of, publish_lists=publish)
        return result

    return run


def _run_night(night: str, kind: str, run: Callable[[], dict[str, Any]]) -> Night:
    start = time.perf_counter()
    try:
        reports = run()
    except Exception as exc:  # the soak reports, it does not stop
        traceback.print_exc()
        return Night(night, kind, f"FAILED: {str(exc).splitlines()[0]}",
                     seconds={"all": time.perf_counter() - start})  # fmt: skip
    published = reports["publish"].n_rows if "publish" in reports else 0
    return Night(
        night, kind, "ok", reports["validate"].rows_in, reports["validate"].rows_quarantined,
        _decision(reports["train"]), published, reports["timings"],
    )  # fmt: skip


def _retrain(as_of: datetime) -> Callable[[], list[Night]]:
    def run() -> list[Night]:
        from flows.operations import retrain_flow

        return [Night("", "", "ok", decision=_decision(retrain_flow(as_of=as_of)["train"]))]

    return run


def _backfill(since: date, before: date) -> Callable[[], list[Night]]:
    def run() -> list[Night]:
        from flows.operations import backfill_flow

        nights = backfill_flow(since=since, until=before - timedelta(days=1))
        return [
            Night(b["as_of"][:10], "backfill", "ok", decision=f"v{b['model_version']}")
            for b in nights
        ]

    return run


def _run_other(night: str, kind: str, run: Callable[[], list[Night]]) -> list[Night]:
    """A run other than the nightly, as rows (a backfill gives one per night it covers)."""
    start = time.perf_counter()
    try:
        rows = run()
    except Exception as exc:  # the soak reports, it does not stop
        traceback.print_exc()
        return [Night(night, kind, f"FAILED: {str(exc).splitlines()[0]}")]
    took = time.perf_counter() - start
    for row in rows:
        row.night, row.kind = row.night or night, kind
        row.seconds = {"all (run)": took}
    return rows


def print_table(rows: list[Night], counts: dict[str, tuple[int, int]]) -> None:
    print("| night (as_of) | run | outcome | rows in | quarantined | model | published | seconds |")
    print("|---|---|---|--:|--:|---|--:|---|")
    for r in rows:
        secs = ", ".join(f"{k} {v:.1f}" for k, v in r.seconds.items())
        print(f"| {r.night} | {r.kind} | {r.outcome} | {r.rows_in:,} | {r.quarantined:,} | "
              f"{r.decision} | {r.published:,} | {secs} |")  # fmt: skip
    for name, (reads, errors) in counts.items():
        print(f"reader on the {name}: {reads} reads, {errors} errors")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--nights", type=int, default=14)
    args = parser.parse_args()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    with tempfile.TemporaryDirectory() as tmp:
        rows, counts = run_soak(args.preset, args.nights, Path(tmp))
    print_table(rows, counts)


if __name__ == "__main__":
    main()
