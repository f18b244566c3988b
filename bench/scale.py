"""Per-shard throughput on this machine, and what a second Dask worker adds: the figures
``docs/capacity.md`` extrapolates from.

Protocol (written before the first numbers were seen; two amendments after the first run,
both fixing what was measured, not tuning it, are marked *amended*):

- **Per core.** Each shard function runs in this process: extraction of the ``demo`` preset's
  landing files (one shard per file: read, type, write the raw lake); validation of the
  extracted batch (row rules, the GX gate, the split); scoring (the project's top-K kernel,
  K=100, 64 factors plus biases) of a user block against 10k, 100k and 1M random items;
  publishing a synthetic 1M-row version to a fresh PostgreSQL serving store (load, keys,
  swap). Best of two runs; rates are rows (events, user x item scores, published rows) per
  second of wall time. *Amended:* the process is pinned to one CPU (``sched_setaffinity``),
  since DuckDB's and Polars' thread pools ignored the one-thread variables; the publish is one
  run, since publishing the same lists again is a no-op by design (the first run's "best of
  two" timed the no-op).
- **1 vs 2 workers.** The same sharded extraction and scoring (*amended*, stop 19, once they
  were sharded: validation in shards of 25,000+ events and the PostgreSQL load in 8 parts; and
  per core, the same batch validated in one shard per file) on a ``LocalCluster`` of one,
  then two single-threaded worker processes (the cluster started before the clock starts; the
  item vectors broadcast once per worker, inside the timing). Speed-up = t(1) / t(2); 2.0 is
  the ceiling on two cores, and the machine's other load is not controlled. *Amended:* each
  worker pinned to a CPU of its own, for the same reason.

    python -m bench.scale [--workdir /tmp/recs-scale] [--postgres postgresql://...]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

# One thread per shard: the per-core rates must not borrow the other core.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

K = 100
FACTORS = 64
ITEM_SIZES = (10_000, 100_000, 1_000_000)
SCORE_CELLS = 400_000_000
"""User x item scores per scoring measurement (users = cells / items)."""
PUBLISH_ROWS = 1_000_000
VALIDATE_SHARD_ROWS = 25_000
"""Rows per validation shard on 1 vs 2 workers: the demo batch (213,715 events) in 8 shards."""
TRAIN_SHAPE = (200_000, 10_000, 2_000_000)
"""Users, items, positive interactions of the LightFM epoch measured (identity features)."""


def _best(fn: Callable[[], object], repeat: int = 2) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _landing(root: Path) -> Path:
    from pipelines.sources.synthetic import PRESETS, write_landing

    landing = root / "landing"
    if not (landing / "events").exists():
        write_landing(PRESETS["demo"], landing)
    return landing


def _pin_worker() -> None:
    """A LocalCluster worker on one CPU of its own (by its name: 0, 1, ...)."""
    from distributed import get_worker

    try:
        name = int(get_worker().name)
    except ValueError:  # not on a worker: the in-process runs are pinned by per_core
        return
    os.sched_setaffinity(0, {name % (os.cpu_count() or 1)})


def _pin_this(dask_worker: Any) -> None:
    """``Client.run``'s form of :func:`_pin_worker` (it hands the worker over)."""
    os.sched_setaffinity(0, {int(dask_worker.name) % (os.cpu_count() or 1)})


def _extract_shard(shared: tuple[Any, Path, datetime], path: Path) -> int:
    from pipelines.sources.files import extract_file

    _pin_worker()
    source, lake_dir, at = shared
    return extract_file(path, source, lake_dir, ingested_at=at, run_id="scale").n_events


def _score_shard(items: Any, users: Any) -> int:
    from models.scoring import top_k

    _pin_worker()
    idx, _ = top_k(users, items, K, num_threads=1)
    return int(idx.shape[0])


def _vectors(n: int, seed: int) -> Any:
    import numpy as np

    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, FACTORS + 1), dtype=np.float32)


def per_core(root: Path, postgres: str | None) -> list[tuple[str, float, int, str]]:
    """(what, seconds, rows, unit) per measurement, on one thread of this process."""
    import polars as pl

    from pipelines.sources.readers import FileSource
    from pipelines.stores import lake
    from pipelines.suites.events import ValidationParams, ValidationThresholds, validate_events
    from pipelines.validate_shards import validate_units

    rows: list[tuple[str, float, int, str]] = []
    landing = _landing(root)
    everywhere = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(everywhere)})
    source = FileSource()
    files = source.files(landing / "events")
    at = datetime.now(UTC)
    shared = (source, root / "lake", at)
    n_events = 0

    def extract_all() -> None:
        nonlocal n_events
        n_events = sum(_extract_shard(shared, f) for f in files)

    seconds = _best(extract_all)
    rows.append((f"extract ({len(files)} files, one shard each)", seconds, n_events, "events"))

    units = sorted(lake.units(root / "lake", "raw"))
    batch = lake.read_units(root / "lake", "raw", units, unit_column="_unit")
    items = pl.read_csv(landing / "items.csv", infer_schema=False)["item_id"].to_list()
    params = ValidationParams(
        window_end=at + timedelta(minutes=10),
        known_items=frozenset(items),
        thresholds=ValidationThresholds(max_quarantine_share=1.0),
    )
    seconds = _best(lambda: validate_events(batch, params, passthrough=["_unit"]))
    rows.append(("validate (row rules, GX gate, split)", seconds, batch.height, "events"))

    def validate_sharded() -> None:  # in process, one shard per file: GX's cost per shard shows
        for step in validate_units(None, root / "lake", units, params, "s", 1).staged:
            step.abort()

    seconds = _best(validate_sharded)
    rows.append((f"validate in {len(units)} shards of one file, added up", seconds, batch.height,
                 "events"))  # fmt: skip

    for n_items in ITEM_SIZES:
        item_vectors = _vectors(n_items, 1)
        users = _vectors(max(SCORE_CELLS // n_items, 100), 2)
        seconds = _best(lambda u=users, i=item_vectors: _score_shard(i, u))  # type: ignore[misc]
        cells = users.shape[0] * n_items
        rows.append((f"score {n_items:,} items, K={K}", seconds, cells, "user x item scores"))
    n_users, n_items, nnz = TRAIN_SHAPE
    seconds, model_bytes = _lightfm_epoch()
    rows.append((f"LightFM epoch ({n_users:,} users x {n_items:,} items, model "
                 f"{model_bytes / 2**20:,.0f} MB)", seconds, nnz, "interactions"))  # fmt: skip
    if postgres:
        seconds = _publish(postgres)
        rows.append(("publish to PostgreSQL (load, keys, swap)", seconds, PUBLISH_ROWS, "rows"))
    os.sched_setaffinity(0, everywhere)
    return rows


def _lightfm_epoch() -> tuple[float, int]:
    """Seconds of one epoch of the project's LightFM configuration on :data:`TRAIN_SHAPE`
    (skewed item popularity), and the bytes of the fitted model's arrays."""
    import numpy as np
    import scipy.sparse as sp
    from lightfm import LightFM

    from models.params import LightFMParams

    n_users, n_items, nnz = TRAIN_SHAPE
    rng = np.random.default_rng(0)
    users = rng.integers(0, n_users, nnz)
    items = np.minimum(rng.zipf(1.3, nnz) - 1, n_items - 1)
    matrix = sp.coo_matrix((np.ones(nnz, np.float32), (users, items)), (n_users, n_items))
    matrix.sum_duplicates()
    p = LightFMParams()  # the project's defaults (models/lightfm_model.py builds the same)
    model = LightFM(
        no_components=p.no_components, loss=p.loss, learning_rate=p.learning_rate,
        item_alpha=p.item_alpha, user_alpha=p.user_alpha, max_sampled=p.max_sampled,
    )  # fmt: skip
    seconds = _best(lambda: model.fit_partial(matrix, epochs=1, num_threads=1))
    arrays = [v for v in vars(model).values() if isinstance(v, np.ndarray)]
    return seconds, sum(a.nbytes for a in arrays)


def _publish(url: str, client: Any = None, parquet: Path | None = None) -> float:
    """Seconds of one publish of :data:`PUBLISH_ROWS` rows to a fresh schema; with ``parquet``,
    loaded from that file in 8 parts on the cluster ``client`` reaches."""
    import uuid

    import adbc_driver_postgresql.dbapi as postgresql
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.stores.serving import ServingStore, publish_recommendations
    from pipelines.stores.serving_shards import load_sharded

    n_users = PUBLISH_ROWS // K
    now = datetime.now(UTC)
    ts = pa.timestamp("us", tz="UTC")
    recs = pa.table(
        {
            "user_id": pa.array([f"u{u:07d}" for u in range(n_users) for _ in range(K)]),
            "rank": pa.array(list(range(1, K + 1)) * n_users, pa.int32()),
            "item_id": pa.array(
                [f"i{(u * 7 + r) % 10_000:05d}" for u in range(n_users) for r in range(K)]
            ),
            "score": pa.array([1.0 / r for _ in range(n_users) for r in range(1, K + 1)]),
            "source": pa.array(["model"] * PUBLISH_ROWS),
            "model_version": pa.array(["1"] * PUBLISH_ROWS),
            "run_id": pa.array(["scale"] * PUBLISH_ROWS),
            "generated_at": pa.array([now] * PUBLISH_ROWS, ts),
            "expires_at": pa.array([now + timedelta(hours=36)] * PUBLISH_ROWS, ts),
        }
    )
    popular = pa.table(
        {
            "segment": ["all"] * K,
            "rank": pa.array(range(1, K + 1), pa.int32()),
            "item_id": [f"i{r:05d}" for r in range(K)],
            "score": [1.0 / (r + 1) for r in range(K)],
        }
    )
    schema = f"scale_{uuid.uuid4().hex[:8]}"
    with postgresql.connect(url, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(f"create schema {schema}")
    try:
        store = ServingStore(f"{url}?options=-csearch_path%3D{schema}")
        load = None
        if parquet is not None:
            part = PUBLISH_ROWS // 8
            pq.write_table(recs, parquet, row_group_size=part)

            def load(cur: Any, target: str) -> int:
                return load_sharded(client, store, cur, parquet, target, part)

        return _best(
            repeat=1,
            fn=lambda: publish_recommendations(
                store,
                recs,
                popular,
                run_id="scale",
                model_version="1",
                clock=lambda: datetime.now(UTC),
                load_recommendations=load,
            ),
        )
    finally:
        with postgresql.connect(url, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(f"drop schema {schema} cascade")


def speed_up(root: Path, postgres: str | None) -> list[tuple[str, float, float]]:
    """(what, seconds on one worker, seconds on two) for the sharded extraction, validation,
    scoring and (with ``postgres``) publishing."""
    import polars as pl

    from pipelines.sources.readers import FileSource
    from pipelines.stores import cluster, lake
    from pipelines.suites.events import ValidationParams, ValidationThresholds
    from pipelines.validate_shards import validate_units

    files = FileSource().files(_landing(root) / "events")
    at = datetime.now(UTC)
    item_vectors = _vectors(100_000, 1)
    blocks = [_vectors(500, 10 + b) for b in range(16)]
    items = pl.read_csv(_landing(root) / "items.csv", infer_schema=False)["item_id"].to_list()
    params = ValidationParams(
        window_end=at + timedelta(minutes=10),
        known_items=frozenset(items),
        thresholds=ValidationThresholds(max_quarantine_share=1.0),
    )
    validated = f"validate (shards of {VALIDATE_SHARD_ROWS:,}+ events, verdicts added up)"
    out: dict[str, list[float]] = {"extract (one shard per file)": [], validated: [],
                                   "score 100,000 items (16 user shards)": []}  # fmt: skip
    for workers in (1, 2):
        with cluster.local_cluster(workers) as address, cluster.connect(address) as client:
            lake_dir = root / f"lake-{workers}"
            shared = (FileSource(), lake_dir, at)

            def extract_all(c: Any = client, s: Any = shared) -> None:
                list(cluster.map_in_order(c, _extract_shard, s, files))

            def validate_all(c: Any = client, where: Path = lake_dir) -> None:
                c.run(_pin_this)  # the library's own shard function: the workers pinned first
                units = sorted(lake.units(where, "raw"))
                verdict = validate_units(c, where, units, params, "s", VALIDATE_SHARD_ROWS)
                for step in verdict.staged:
                    step.abort()

            def score_all(c: Any = client) -> None:
                items = cluster.broadcast(c, item_vectors)
                list(cluster.map_in_order(c, _score_shard, items, blocks))

            out["extract (one shard per file)"].append(_best(extract_all))
            out[validated].append(_best(validate_all))
            if postgres:
                client.run(_pin_this)
                published = out.setdefault("publish to PostgreSQL (8 parts of 125,000 rows)", [])
                published.append(_publish(postgres, client, root / "publish.parquet"))
            out["score 100,000 items (16 user shards)"].append(_best(score_all))
    return [(what, one, two) for what, (one, two) in out.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/recs-scale"))
    parser.add_argument(
        "--postgres", default="postgresql://root@127.0.0.1:5432/test",
        help="a PostgreSQL URL for the publish rate ('' to leave it out)",
    )  # fmt: skip
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"\n## Per core (one thread), {os.cpu_count()} cores on this machine\n")
    print("| shard | seconds | rows | rows/s per core | rows are |")
    print("|---|--:|--:|--:|---|")
    for what, seconds, n, unit in per_core(args.workdir, args.postgres or None):
        print(f"| {what} | {seconds:.2f} | {n:,} | {n / seconds:,.0f} | {unit} |")
    print("\n## The same shards on a LocalCluster: 1 vs 2 single-threaded workers\n")
    print("| sharded stage | 1 worker s | 2 workers s | speed-up |")
    print("|---|--:|--:|--:|")
    for what, one, two in speed_up(args.workdir, args.postgres or None):
        print(f"| {what} | {one:.2f} | {two:.2f} | {one / two:.2f}x |")


if __name__ == "__main__":
    main()
