"""The fault catalogue: every kill point of the nightly's six stages, and every bad input, each
run and judged. ``tests/faults/`` asserts it; this prints it as a table (``--markdown`` for the
README's reliability section).

**Kill points.** A clean run of extract -> validate -> features -> train -> score -> publish on
the ``tiny`` preset records every write each stage makes: a file renamed into place, a warehouse
write or commit, a serving-store step, an MLflow call. Consecutive writes of one kind are one
point. For each point, the stage runs again from the state before it, with an exception raised
just before that write (:class:`Killed` derives from BaseException, as KeyboardInterrupt does),
then the scheduler's next attempt runs: the stage again, then the rest. Judged:

- after the kill, the serving store serves what it did before the stage (for a kill past
  publish's swap: exactly the new lists), and nothing was written outside the run's stores;
- after the rerun, every record is accounted for (lines read = lake + extract rejects; raw =
  clean + validate rejects) and the lake, warehouse, serving store and MLflow registry equal
  the clean run's, up to the identities MLflow assigns (model version numbers and run ids:
  a rolled-back training's number is not reused) and the serving store's version ids.

**Bad inputs** (:data:`INPUTS`): one landing file each, extracted and validated; judged: lines
read = events written + rejected, written = clean + quarantined, the expected reasons, and
ids that survive byte for byte.

Run: ``python -m bench.faults`` (about 3 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gzip
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq

AT = datetime(2030, 1, 1, tzinfo=UTC)
RUN = "night-1"
K = 5
HOLDOUT_DAYS = 4
EPOCHS = 4  # the catalogue is about commits, not quality: a short fit
STAGES = ("extract", "validate", "features", "train", "score", "publish")
IDENTITIES = frozenset({"model_version", "mlflow_run_id", "version", "seq"})
"""Columns and keys compared by presence only: MLflow assigns version numbers and run ids, the
serving store its version ids; a rerun after a rolled-back training gets new ones."""


class Killed(BaseException):
    """An injected kill (BaseException: no ``except Exception`` handler catches it)."""


# -- the write recorder ---------------------------------------------------------------------------


@dataclass
class Recorder:
    """Counts writes; records their labels, or raises :class:`Killed` just before write ``kill_at``
    (1-based)."""

    kill_at: int | None = None
    labels: list[str] = field(default_factory=list)
    killed: str | None = None

    def write(self, label: str) -> None:
        self.labels.append(label)
        if self.kill_at is not None and len(self.labels) == self.kill_at and self.killed is None:
            self.killed = label
            raise Killed(label)


def _caller(depth: int = 2) -> str:
    frame = sys._getframe(depth)
    module = frame.f_globals.get("__name__", "?").rsplit(".", 1)[-1]
    return f"{module}.{frame.f_code.co_name}"


@contextlib.contextmanager
def recording(recorder: Recorder) -> Iterator[None]:
    """Every write primitive of the stores wrapped to report to ``recorder``."""
    from mlflow.tracking import MlflowClient

    from pipelines.stores import serving, warehouse

    patches: list[tuple[Any, str, Any]] = []

    def patch(owner: Any, name: str, wrapper: Any) -> None:
        patches.append((owner, name, getattr(owner, name)))
        setattr(owner, name, wrapper)

    real_replace = os.replace

    def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        # numba writes its compiled-kernel cache by rename too: not a store, and only when a
        # kernel is first compiled, so counting it made a cold cache's clean run write more.
        if not sys._getframe(1).f_globals.get("__name__", "").startswith("numba."):
            recorder.write(f"rename to {Path(dst).name} in {_caller()}")
        real_replace(src, dst, *args, **kwargs)

    patch(os, "replace", replace)

    def wrap(owner: Any, name: str, label: str) -> None:
        real = getattr(owner, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            recorder.write(label)
            return real(*args, **kwargs)

        patch(owner, name, wrapper)

    for name in ("append", "replace", "replace_quarantine", "append_history", "publish_views",
                 "drop_old_backfill_schemas"):  # fmt: skip
        wrap(warehouse, name, f"warehouse.{name}")
    real_transaction = warehouse.transaction

    @contextlib.contextmanager
    def transaction(con: Any) -> Iterator[None]:
        with real_transaction(con):
            yield
            recorder.write("warehouse commit")

    patch(warehouse, "transaction", transaction)
    for name in ("_prepare", "_add_key", "_point_views", "_drop_old_versions"):
        wrap(serving, name, f"serving.{name.lstrip('_')}")
    for name in sorted(vars(MlflowClient)):
        if name.startswith(("create_", "log_", "set_", "update_", "delete_", "finalize_")):
            wrap(MlflowClient, name, f"mlflow.{name}")
    try:
        yield
    finally:
        for owner, name, real in reversed(patches):
            setattr(owner, name, real)


# -- a world and its stages -----------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    root: Path

    @property
    def stores(self) -> Any:
        from pipelines.stores import Stores

        r = self.root
        return Stores(r / "landing", r / "lake", r / "wh.duckdb", f"sqlite:///{r / 'serving.db'}")

    @property
    def tracking(self) -> Any:
        from pipelines.stores.tracking import Tracking

        return Tracking(
            f"sqlite:///{self.root / 'mlflow.db'}", self.root / "artifacts", "exp", "recs"
        )


def run_stage(world: World, stage: str) -> Any:
    """One stage as the nightly runs it (fixed run id and clocks: the scheduler's retry of the
    same night)."""
    from features.signal import SignalParams
    from models.baselines import PopularityParams
    from models.ease import EASEParams
    from models.params import LightFMParams
    from models.policy import GateParams
    from pipelines.extract import extract
    from pipelines.features import build_features
    from pipelines.publish import publish
    from pipelines.review import committed_trainings
    from pipelines.score import score
    from pipelines.sources.readers import FileSource
    from pipelines.stores import scored
    from pipelines.stores.tracking import finish_abandoned_runs
    from pipelines.suites.events import ValidationThresholds
    from pipelines.train import train
    from pipelines.validate import validate

    stores, tracking, as_of = world.stores, world.tracking, _as_of(world)
    if stage == "extract":
        return extract(stores, sources=[FileSource()], run_id=RUN, ingested_at=AT)
    if stage == "validate":
        return validate(stores, run_id=RUN, now=AT, thresholds=ValidationThresholds())
    if stage == "features":
        return build_features(
            stores, as_of=as_of, holdout_days=HOLDOUT_DAYS, top_k=K, signal=SignalParams(),
            popularity=PopularityParams(),
        )  # fmt: skip
    if stage == "train":
        finish_abandoned_runs(tracking, by_run=RUN, committed=committed_trainings(stores.warehouse))
        (manifest,) = _query(world, "select manifest from feature_runs order by rowid desc limit 1")
        return train(
            stores, tracking, params=LightFMParams(num_threads=1, epochs=EPOCHS),
            signal=SignalParams(), popularity=PopularityParams(), ease=EASEParams(),
            gate=GateParams(), k=K,
            run_id=RUN, as_of=as_of, window_start=as_of - timedelta(days=HOLDOUT_DAYS),
            manifest=str(manifest[0]),
        )  # fmt: skip
    if stage == "score":
        (plan,) = _query(world, "select model_version from model_runs order by rowid desc limit 1")
        return score(
            stores, tracking, k=K, popularity=PopularityParams(), ease=EASEParams(), run_id=RUN,
            as_of=as_of, model_version=str(plan[0]), plan_version=str(plan[0]), generated_at=AT,
            ttl=timedelta(hours=24), num_threads=1,
        )  # fmt: skip
    if stage == "publish":
        return publish(
            stores, recommendations=scored.scored_dir(stores.lake, RUN), clock=lambda: AT
        )
    raise ValueError(f"stage {stage!r}: expected one of {', '.join(STAGES)}")


def _as_of(world: World) -> datetime:
    """Midnight after the tiny preset's last landing day (fixed by the landing files' names)."""
    days = sorted(p.name for p in (world.root / "landing" / "events").glob("*.jsonl.gz"))
    last = datetime.strptime(days[-1][len("events-") : len("events-") + 10], "%Y-%m-%d")
    return last.replace(tzinfo=UTC) + timedelta(days=1)


def _query(world: World, sql: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(world.stores.warehouse), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


# -- the state of a world, normalised -------------------------------------------------------------


def _rows(con: Any, sql: str) -> list[tuple[Any, ...]]:
    cur = con.execute(sql)
    names = [d[0] for d in cur.description]
    keep = [i for i, n in enumerate(names) if n not in IDENTITIES]
    rows = [tuple(repr(r[i]) for i in keep) for r in cur.fetchall()]
    return sorted(rows)


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=repr).encode()).hexdigest()


def lake_state(world: World) -> dict[str, str]:
    """Every lake file -> digest of its content (Parquet: its rows without identity columns)."""
    out = {}
    lake = world.stores.lake
    for path in sorted(p for p in lake.rglob("*") if p.is_file()):
        rel = str(path.relative_to(lake))
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            table = table.drop_columns([c for c in table.column_names if c in IDENTITIES])
            out[rel] = _digest(sorted(map(repr, table.to_pylist())))
        elif path.name == "manifest.json":
            meta = json.loads(path.read_text())
            out[rel] = _digest({k: v for k, v in meta.items() if k not in IDENTITIES})
        else:
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def warehouse_state(world: World) -> dict[str, str]:
    """Every warehouse table and view -> digest of its sorted rows (identity columns dropped)."""
    path = world.stores.warehouse
    if not path.exists():
        return {}
    con = duckdb.connect(str(path), read_only=True)
    try:
        con.execute("set TimeZone = 'UTC'")
        names = con.execute(
            "select table_schema, table_name from information_schema.tables order by all"
        ).fetchall()
        return {f"{s}.{t}": _digest(_rows(con, f'select * from "{s}"."{t}"')) for s, t in names}
    finally:
        con.close()


def serving_lists(world: World) -> dict[str, str]:
    """What the serving store serves: its three views (identity columns dropped) and how many
    versions it keeps."""
    import sqlite3

    path = world.root / "serving.db"
    if not path.exists():  # nothing served, as an empty store serves nothing
        return {"publications": _digest([])}
    con = sqlite3.connect(path)
    try:
        kinds = dict(con.execute("select name, type from sqlite_master").fetchall())
        out = {
            v: _digest(_rows(con, f"select * from {v}")) for v, k in kinds.items() if k == "view"
        }
        published = (  # the bookkeeping table made before the first swap is not a change
            _rows(con, "select run_id, n_users, n_rows, checksum, status from publications")
            if "publications" in kinds
            else []
        )
        out["publications"] = _digest(published)
        return dict(sorted(out.items()))
    finally:
        con.close()


def registry_state(world: World) -> dict[str, str]:
    """MLflow: which aliases exist, each on a version of a FINISHED run; versions kept; FINISHED
    runs; and no run left RUNNING."""
    if not (world.root / "mlflow.db").exists():
        return {}
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    experiment_id = world.tracking.activate()
    client = MlflowClient()
    runs = client.search_runs([experiment_id])
    status = {r.info.run_id: r.info.status for r in runs}
    try:
        model = client.get_registered_model("recs")
    except MlflowException:
        return {"runs": _digest(sorted(status.values()).count("FINISHED"))}
    versions = client.search_model_versions("name = 'recs'")
    by_version = {str(v.version): v for v in versions}
    aliases = {
        alias: status.get(by_version[str(v)].run_id, "gone") for alias, v in model.aliases.items()
    }
    return {
        "aliases": _digest(sorted(aliases.items())),
        "versions": _digest(len(versions)),
        "finished": _digest(sorted(status.values()).count("FINISHED")),
        "running": _digest(sorted(status.values()).count("RUNNING")),
    }


def state(world: World) -> dict[str, dict[str, str]]:
    return {
        "lake": lake_state(world),
        "warehouse": warehouse_state(world),
        "serving": serving_lists(world),
        "mlflow": registry_state(world),
    }


def accounting(world: World, *, validated: bool = True) -> tuple[int, list[str]]:
    """Every landing line is in the raw lake or an extract reject; every raw row is clean or a
    validate reject (when ``validated``). Returns the rows unaccounted for, and how."""
    lines = sum(
        len(gzip.decompress(p.read_bytes()).splitlines())
        for p in (world.root / "landing" / "events").glob("*.jsonl.gz")
    )
    raw, clean = (
        sum(
            pq.read_metadata(f).num_rows for f in (world.stores.lake / z).glob("events/*/*.parquet")
        )
        for z in ("raw", "clean")
    )
    con = duckdb.connect()
    try:
        con.execute(f"attach '{world.stores.warehouse}' as wh (read_only)")
        rejects = dict(
            con.execute("select stage, count(*) from wh.quarantine group by all").fetchall()
        )
    finally:
        con.close()
    lost, how = abs(lines - raw - rejects.get("extract", 0)), []
    if lost:
        how.append(f"lines {lines} != raw {raw} + extract rejects {rejects.get('extract', 0)}")
    if validated and raw != clean + rejects.get("validate", 0):
        lost += abs(raw - clean - rejects.get("validate", 0))
        how.append(f"raw {raw} != clean {clean} + validate rejects {rejects.get('validate', 0)}")
    return lost, how


def _diff(a: dict[str, dict[str, str]], b: dict[str, dict[str, str]]) -> list[str]:
    out = []
    for store in a.keys() | b.keys():
        x, y = a.get(store, {}), b.get(store, {})
        out += [f"{store}:{key}" for key in sorted(x.keys() | y.keys()) if x.get(key) != y.get(key)]
    return sorted(out)


# -- the catalogue --------------------------------------------------------------------------------


@dataclass
class Outcome:
    """One kill point: where, what the kill left, what the rerun ended with."""

    stage: str
    write: int
    label: str
    problems: list[str]
    seconds: float
    lost: int  # records unaccounted for after the rerun

    @property
    def ok(self) -> bool:
        return not self.problems and not self.lost


@dataclass
class Catalogue:
    """The clean run's states and write labels, in a folder of snapshots."""

    root: Path
    labels: dict[str, list[str]]
    before: dict[str, dict[str, dict[str, str]]]
    after: dict[str, dict[str, dict[str, str]]]
    landing: str = ""  # digest of the landing folder (the input: never written)

    @property
    def work(self) -> World:
        return World(self.root / "work")

    def snapshot(self, stage: str) -> Path:
        return self.root / "snapshots" / stage

    def restore(self, stage: str) -> None:
        shutil.rmtree(self.work.root, ignore_errors=True)
        shutil.copytree(self.snapshot(stage), self.work.root)

    def kill_points(self, stage: str) -> list[tuple[int, str]]:
        """(1-based write index, label) of the first write of each run of one kind."""
        labels = self.labels[stage]
        return [(i + 1, x) for i, x in enumerate(labels) if i == 0 or labels[i - 1] != x]


def clean_run(root: Path, landing: Path) -> Catalogue:
    """Run the six stages once, snapshotting the world before each and recording its writes."""
    # MLflow's SQLite store keeps no pooled connection: a restored file is read afresh.
    os.environ["MLFLOW_SQLALCHEMYSTORE_POOLCLASS"] = "NullPool"
    cat = Catalogue(root, {}, {}, {})
    shutil.copytree(landing, cat.work.root / "landing")
    # The tracking store exists before the first stage, as a deployed one does (a restored
    # snapshot without it would meet MLflow's cached, already initialised store).
    cat.work.tracking.activate()
    for stage in STAGES:
        shutil.copytree(cat.work.root, cat.snapshot(stage))
        cat.before[stage] = state(cat.work)
        recorder = Recorder()
        with recording(recorder):
            run_stage(cat.work, stage)
        cat.labels[stage] = recorder.labels
        cat.after[stage] = state(cat.work)
    shutil.copytree(cat.work.root, cat.root / "final")
    cat.landing = _tree_digest(cat.work.root / "landing")
    return cat


def _tree_digest(root: Path) -> str:
    return _digest({str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                    for p in sorted(root.rglob("*")) if p.is_file()})  # fmt: skip


def _outside(cat: Catalogue) -> list[str]:
    """What a run wrote outside its stores: top-level entries of the world the clean run never
    made, entries beside the world, or a changed landing folder (the input)."""
    made = {p.name for p in (cat.root / "final").iterdir()}
    out = sorted(p.name for p in cat.work.root.iterdir() if p.name not in made)
    out += sorted(
        p.name for p in cat.root.iterdir() if p.name not in ("work", "snapshots", "final")
    )
    if _tree_digest(cat.work.root / "landing") != cat.landing:
        out.append("landing (changed)")
    return out


def kill(cat: Catalogue, stage: str, write: int, label: str) -> Outcome:
    """Kill ``stage`` just before its write number ``write``, then rerun it and the rest."""
    start = time.perf_counter()
    cat.restore(stage)
    recorder = Recorder(kill_at=write)
    problems = []
    try:
        with recording(recorder):
            run_stage(cat.work, stage)
        problems.append("the kill never happened (the stage wrote less than the clean run)")
    except Killed:
        pass
    now = state(cat.work)
    allowed = [cat.before[stage]["serving"]]
    if stage == "publish":  # past the swap, the new lists serve: the rerun keeps them
        allowed.append(cat.after[stage]["serving"])
    if now["serving"] not in allowed:
        problems.append("the serving store changed after the kill")
    if outside := _outside(cat):
        problems.append(f"written outside the stores: {outside}")
    last = STAGES.index(stage)
    for then in STAGES[last:]:
        try:
            run_stage(cat.work, then)
        except Exception as exc:  # judged, not raised: the table shows it
            problems.append(f"rerun {then}: {type(exc).__name__}: {exc}"[:300])
            break
        if then in ("extract", "validate", "features") and then == stage:
            break  # what follows is a function of this state: compared below
    reached = then
    diff = _diff(state(cat.work), cat.after[reached])
    if diff:
        problems.append(f"after the rerun, differs from the clean run in {', '.join(diff[:6])}")
    lost, how = accounting(cat.work, validated=stage != "extract")
    problems += how
    return Outcome(stage, write, label, problems, time.perf_counter() - start, lost)


def run_catalogue(root: Path, landing: Path, stages: tuple[str, ...] = STAGES) -> list[Outcome]:
    cat = clean_run(root, landing)
    return [kill(cat, s, i, label) for s in stages for i, label in cat.kill_points(s)]


# -- bad inputs -----------------------------------------------------------------------------------

INPUT_DAY = "2026-10-10"
GOOD_LINES = 1_000
"""Well-formed lines around the bad ones (a batch with more than 1% quarantined fails)."""
ODD_IDS = {
    "quotes": "u\"1'",
    "semicolon": "u1; drop table recommendations; --",
    "newline": "u\n1",
    "10k characters": "u" * 10_000,
    "non-ascii": "usu\u00e1rio-\u7528\u6237-\U0001f600",
}


def _line(**fields: object) -> str:
    return json.dumps(fields, allow_nan=True)


def event(n: int, user: str, item: str, **extra: object) -> dict[str, object]:
    return {"event_id": f"e{n}", "user_id": user, "item_id": item, "event_type": "view",
            "event_ts": f"{INPUT_DAY}T10:{n % 60:02d}:00Z", "value": None, "session_id": "s",
            **extra}  # fmt: skip


def input_cases(users: list[str], items: list[str]) -> dict[str, tuple[list[str], dict[str, str]]]:
    """Case -> (bad lines, {event id: where its rows end}): ``clean``, a validation reason, or
    ``extract:<reason>``; several rows of one id joined by ``+``."""
    u, i = users[0], items[0]
    rating = {"event_type": "rating"}
    return {
        "duplicate event ids": (
            [_line(**event(900, u, i)), _line(**event(900, u, i)),
             _line(**event(900, u, items[1]))],
            {"e900": "clean+duplicate_event_id+duplicate_event_id"},  # the first one is kept
        ),
        "unknown event type": (
            [_line(**event(901, u, i, event_type="teleport"))], {"e901": "unknown_event_type"}
        ),
        "NaN value": (
            [_line(**event(902, u, i, **rating, value=float("nan")))],
            {"e902": "extract:value_not_finite"},
        ),
        "infinite values": (
            [_line(**event(903, u, i, value=float("inf"))),
             _line(**event(904, u, i, value=float("-inf"))),
             _line(**event(905, u, i, value=1)).replace('"value": 1,', '"value": 1e400,'),
             _line(**event(906, u, i, **rating, value="Infinity"))],
            {f"e{n}": "extract:value_not_finite" for n in (903, 904, 905, 906)},
        ),
        "unknown item": ([_line(**event(907, u, "no-such-item"))], {"e907": "unknown_item"}),
        **{
            f"user id with {name}": ([_line(**event(910 + n, odd, i))], {f"e{910 + n}": "clean"})
            for n, (name, odd) in enumerate(ODD_IDS.items())
        },
        "event id with quotes and a newline": (
            [_line(**{**event(920, u, i), "event_id": "e'9\"2\n0"})], {"e'9\"2\n0": "clean"}
        ),
    }  # fmt: skip


def catalog_ids(landing: Path, name: str, column: str) -> list[str]:
    with (landing / f"{name}.csv").open() as f:
        return [row[column] for row in csv.DictReader(f)]


def input_world(root: Path, landing: Path, bad: list[str]) -> Any:
    """A landing folder: the preset's catalogs and one day of good lines with ``bad`` after."""
    from pipelines.stores import Stores

    (root / "landing" / "events").mkdir(parents=True)
    for name in ("users.csv", "items.csv"):
        shutil.copy(landing / name, root / "landing" / name)
    users = catalog_ids(landing, "users", "user_id")
    items = catalog_ids(landing, "items", "item_id")
    good = [_line(**event(10_000 + n, users[n % 40], items[n % 30])) for n in range(GOOD_LINES)]
    path = root / "landing" / "events" / f"events-{INPUT_DAY}.jsonl"
    path.write_text("\n".join(good + bad) + "\n")
    return Stores(root / "landing", root / "lake", root / "wh.duckdb",
                  f"sqlite:///{root / 'serving.db'}")  # fmt: skip


def where_rows_ended(stores: Any) -> dict[str, list[str]]:
    """Event id -> where each of its rows ended: ``clean``, ``extract:<reason>``, ``<reason>``."""
    from pipelines.stores import lake, warehouse

    out: dict[str, list[str]] = {}
    clean = lake.read_units(stores.lake, "clean", list(lake.units(stores.lake, "clean")),
                            unit_column="_unit")  # fmt: skip
    for event_id in clean["event_id"].to_list():
        out.setdefault(event_id, []).append("clean")
    with warehouse.connect(stores.warehouse, read_only=True) as con:
        rows = (
            con.execute("select stage, reason, event_id from quarantine").fetchall()
            if warehouse.table_exists(con, "quarantine")
            else []
        )
    for stage, reason, event_id in rows:
        out.setdefault(event_id, []).append(reason if stage == "validate" else f"{stage}:{reason}")
    return {k: sorted(v) for k, v in out.items()}


@dataclass(frozen=True)
class InputOutcome:
    """One bad input through extract and validate."""

    case: str
    read: int
    rejected: int
    clean: int
    quarantined: int
    wrong: dict[str, str]  # event id -> where it ended, where that is not what was expected

    @property
    def lost(self) -> int:
        return self.read - self.rejected - self.clean - self.quarantined

    @property
    def ok(self) -> bool:
        return self.lost == 0 and not self.wrong


def run_input(root: Path, landing: Path, case: str) -> InputOutcome:
    from pipelines.extract import extract
    from pipelines.sources.readers import FileSource
    from pipelines.suites.events import ValidationThresholds
    from pipelines.validate import validate

    users = catalog_ids(landing, "users", "user_id")
    items = catalog_ids(landing, "items", "item_id")
    bad, expected = input_cases(users, items)[case]
    stores = input_world(root, landing, bad)
    ex = extract(stores, sources=[FileSource()], run_id="r", ingested_at=AT)
    va = validate(stores, run_id="r", now=AT, thresholds=ValidationThresholds())
    ended = where_rows_ended(stores)
    want = {**{f"e{10_000 + n}": "clean" for n in range(GOOD_LINES)}, **expected}
    got = {k: "+".join(v) for k, v in ended.items()}
    wrong = {k: got.get(k, "lost") for k in want.keys() | got.keys() if got.get(k) != want.get(k)}
    return InputOutcome(case, ex.rows_read, ex.rows_rejected, va.rows_clean, va.rows_quarantined,
                        wrong)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    import tempfile

    from pipelines.sources.synthetic import PRESETS, write_landing

    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--stages", nargs="*", default=list(STAGES), choices=STAGES)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        landing = Path(tmp) / "landing"
        write_landing(PRESETS["tiny"], landing)
        cases = sorted(input_cases(["u"], ["i", "j"]))
        inputs = [run_input(Path(tmp) / f"input-{n}", landing, c) for n, c in enumerate(cases)]
        kills = run_catalogue(Path(tmp) / "catalogue", landing, tuple(args.stages))
    print("| input or kill point | outcome | rows lost |")
    print("|---|---|---|")
    for i in inputs:
        verdict = (
            f"read {i.read} = {i.clean} clean + {i.quarantined} quarantined + {i.rejected} "
            "rejected; every id where expected"
            if i.ok
            else f"ended elsewhere: {dict(list(i.wrong.items())[:3])}"
        )
        print(f"| input: {i.case} | {verdict} | {i.lost} |")
    for o in kills:
        verdict = "rerun equals a clean run" if o.ok else "; ".join(o.problems)
        print(f"| kill in {o.stage} before write #{o.write} ({o.label}) | {verdict} | {o.lost} |")
    print("\n| stage | kill points | reruns equal to a clean run | rows lost |")
    print("|---|---|---|---|")
    for stage in STAGES:
        mine = [o for o in kills if o.stage == stage]
        if mine:
            good = sum(o.ok for o in mine)
            print(f"| {stage} | {len(mine)} | {good} | {sum(o.lost for o in mine)} |")
    failed = sum(not o.ok for o in kills) + sum(not i.ok for i in inputs)
    seconds = sum(o.seconds for o in kills)
    print(f"\n{len(inputs)} inputs, {len(kills)} kill points ({seconds:.0f} s); {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
