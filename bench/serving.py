"""Serving at K=100 on the ``large`` shape: the score stage against the bare matrix product, the
publish to both stores, and readers' latency during publishes. All measured in one run.

The world is built directly at the shape of the ``large`` preset (53,424 users x 10,000 items,
about 60 interactions per user, 64-dimensional LightFM embeddings registered as ``@champion`` in
a scratch MLflow store), so the score stage reads real warehouse tables and a real registered
model without the hour a full large nightly takes. The stage runs twice: with the model serving
every user, and with EASE serving warm users (refitted on the warehouse tables inside the
stage, as a nightly does when EASE wins the warm users' window; it does on ``large``). Each
case runs in its own child process, so its peak RSS (VmHWM, imports and inputs included) is
its own; ``inputs`` is what the process held before the timed calls. Each case runs twice and
the faster run is reported (the first also pays page faults of fresh buffers and cold
caches). The machine's speed drifts between cases run minutes apart (the bare product took
0.37-0.72 s across one day) and within a minute, so each stage case then runs five more times,
each run followed by the bare product in its own process, and prints the median of those five
ratios and their range beside the table's ratio (the stage's parts and cores busy are those of
its second timed run). A floor case runs the two things the stage cannot skip at once (the
kernel, and the stage's writer writing the model stage's rows) with the same five pairs: what
the stage adds to it is the rest of its work. Readers during publishes: two processes keep a
connection, two connect per read, on the same two cores as the publishes, as fast as they can
and then pausing 5 ms between reads; the paced readers are then measured with no publish, alone
and beside two processes that only spin, as references. Nothing here asserts on time.

    python -m bench.serving [--users 53424] [--items 10000] [--k 100] [--postgres URL]
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing as mp
import resource
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

AS_OF = datetime(2026, 11, 1, tzinfo=UTC)
DIM = 64
PER_USER = 60


def _rss_mb() -> float:
    """Peak RSS of this process since it started (VmHWM: unlike ``ru_maxrss``, not inherited
    from the parent that spawned it)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_world(root: Path, n_users: int, n_items: int, k: int) -> None:
    """Warehouse feature tables, a champion with random embeddings, and the arrays the kernel
    cases read (user and item vectors, the seen matrix)."""
    import numpy as np
    import polars as pl
    import scipy.sparse as sp

    from features.matrices import ID_TOKEN
    from models.base import TrainingData, exclusion_matrix
    from models.baselines import PopularityParams, popular_items
    from models.lightfm_model import LightFMRecommender
    from models.params import LightFMParams
    from pipelines.review import record_segment_choices
    from pipelines.stores import warehouse
    from pipelines.stores.tracking import log_training_run, set_aliases

    rng = np.random.default_rng(7)
    users = pl.DataFrame(
        {
            "user_id": [f"u{n:06d}" for n in range(n_users)],
            "country": rng.choice(["US", "DE", "FR", "GB", "BR", "IN", "JP", "ES"], n_users),
            "device": rng.choice(["ios", "android", "web"], n_users),
        }
    )
    items = pl.DataFrame(
        {
            "item_id": [f"i{n:05d}" for n in range(n_items)],
            "category": rng.choice([f"c{n:02d}" for n in range(20)], n_items),
            "available": rng.random(n_items) < 0.95,
            "first_seen": [AS_OF - timedelta(days=int(d)) for d in rng.integers(1, 90, n_items)],
        }
    )
    # Zipf-like item choice; 90% of users have history (the rest are cold).
    weights = 1.0 / np.arange(1, n_items + 1) ** 0.8
    warm = int(n_users * 0.9)
    u = np.repeat(np.arange(warm), PER_USER)
    i = rng.choice(n_items, size=u.size, p=weights / weights.sum())
    interactions = (
        pl.DataFrame({"u": u, "i": i})
        .unique()
        .select(
            user_id=pl.lit("u") + pl.col("u").cast(pl.String).str.zfill(6),
            item_id=pl.lit("i") + pl.col("i").cast(pl.String).str.zfill(5),
            n_events=pl.lit(1, pl.Int64),
            weight=pl.lit(1.0),
            positive=pl.lit(True),
            last_ts=pl.lit(AS_OF - timedelta(days=3)).cast(pl.Datetime("us", "UTC")),
        )
    )
    data = TrainingData(interactions, users, items, AS_OF)
    available = items.filter(pl.col("available"))["item_id"]
    popular = popular_items(data, PopularityParams(), k, available)
    wh = root / "warehouse.duckdb"
    with warehouse.connect(wh) as con:
        for name, frame in (
            ("interactions", interactions), ("user_features", users),
            ("item_features", items), ("popular_items", popular),
        ):  # fmt: skip
            warehouse.replace(con, name, frame.to_arrow())
        warehouse.append(
            con,
            "feature_runs",
            pl.DataFrame({"as_of": [AS_OF], "features_schema": ["main"]}).to_arrow(),
        )
    vocabulary = pl.Series(
        [ID_TOKEN + u for u in interactions["user_id"].unique().sort()]
        + [f"country={c}" for c in ["US", "DE", "FR", "GB", "BR", "IN", "JP", "ES"]]
        + [f"device={d}" for d in ["ios", "android", "web"]]
    )
    model = LightFMRecommender(
        params=LightFMParams(no_components=DIM),
        user_vocabulary=vocabulary,
        user_feature_embeddings=rng.normal(size=(vocabulary.len(), DIM)).astype(np.float32),
        item_ids=items["item_id"],
        item_embeddings=rng.normal(size=(n_items, DIM)).astype(np.float32),
        item_biases=rng.normal(size=n_items).astype(np.float32) * 0.1,
    )
    tracking = _tracking(root)
    logged = log_training_run(
        tracking, model, run_name="bench", params={}, metrics={}, tags={}, promote=True
    )
    set_aliases(tracking, logged.version, propose=True, promote=True)
    with warehouse.connect(wh) as con:  # the two plans the stage cases score by
        for plan, warm_by in PLANS.items():
            serving = {"warm": warm_by, "cold": "model"}
            record_segment_choices(con, plan, logged.version, AS_OF, serving, serving, {}, k)
    vectors, _ = model.user_vectors(users)
    np.save(root / "users.npy", vectors)
    np.save(root / "items.npy", model.item_vectors())
    np.save(root / "available.npy", items["available"].to_numpy())
    seen = exclusion_matrix(interactions, users["user_id"], items["item_id"])
    assert seen is not None
    sp.save_npz(root / "seen.npz", seen)


def _tracking(root: Path) -> Any:
    from pipelines.stores.tracking import Tracking

    return Tracking(
        tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
        artifacts_dir=root / "artifacts",
        experiment_name="bench-serving",
        model_name="bench-serving",
    )


def _arrays(root: Path) -> tuple[Any, Any, Any, Any]:
    import numpy as np
    import scipy.sparse as sp

    return (
        np.load(root / "users.npy"),
        np.load(root / "items.npy"),
        sp.csr_matrix(sp.load_npz(root / "seen.npz")),
        np.load(root / "available.npy"),
    )


def case_bare_product(root: Path, k: int) -> Callable[[], object]:
    """The product alone, into a buffer allocated and touched beforehand (no page faults)."""
    import numpy as np

    users, items, _, _ = _arrays(root)
    users_f, items_t = users.astype(np.float32), items.astype(np.float32).T.copy()
    out = np.ones((users_f.shape[0], items_t.shape[1]), np.float32)
    return lambda: np.matmul(users_f, items_t, out=out)


def case_kernel(root: Path, k: int) -> Callable[[], object]:
    from models.scoring import top_k

    users, items, seen, available = _arrays(root)
    top_k(users[:64], items, k, exclude=seen[:64], allowed=available)  # compiled already
    return lambda: top_k(users, items, k, exclude=seen, allowed=available, num_threads=2)


def case_numpy_reference(root: Path, k: int) -> Callable[[], object]:
    import numpy as np

    users, items, seen, available = _arrays(root)

    def full() -> object:
        scores = users.astype(np.float32) @ items.astype(np.float32).T
        scores[:, ~available] = -np.inf
        rows = seen.tocoo()
        scores[rows.row, rows.col] = -np.inf
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        best = np.take_along_axis(scores, part, axis=1)
        order = np.argsort(-best, axis=1, kind="stable")
        return np.take_along_axis(part, order, axis=1)

    return full


SAMPLE = 2_000
REPEAT = 2


def case_lightfm_predict(root: Path, k: int) -> Callable[[], object]:
    """``LightFM.predict`` on every item for a sample of users (scaled up in the table)."""
    import numpy as np
    import scipy.sparse as sp
    from lightfm import LightFM

    users, items, _, _ = _arrays(root)
    n_users, n_items = users.shape[0], items.shape[0]
    model = LightFM(no_components=DIM)
    one = sp.coo_matrix((np.ones(1), (np.zeros(1, int), np.zeros(1, int))), (n_users, n_items))
    model.fit_partial(one, epochs=1)
    model.user_embeddings[:] = users[:, :DIM]
    model.item_embeddings[:] = items[:, :DIM]
    uids = np.repeat(np.arange(SAMPLE, dtype=np.int32), n_items)
    iids = np.tile(np.arange(n_items, dtype=np.int32), SAMPLE)
    return lambda: model.predict(uids, iids, num_threads=2)


PLANS = {"plan-model": "model", "plan-ease": "ease"}
"""Training runs recorded in the world's ``segment_choices``: what serves warm users (cold users:
the model). A nightly's training picks EASE for warm users when it wins their window."""


def case_score_stage(
    root: Path, k: int, plan: str = "plan-model", run_id: str = "bench"
) -> Callable[[], object]:
    from models.baselines import PopularityParams
    from models.ease import EASEParams
    from pipelines.score import score

    stores = _stores(root, f"sqlite:///{root / 'serving.sqlite'}")

    def run() -> object:
        cpu, wall = _cpu_seconds(), time.perf_counter()
        seconds = score(
            stores, _tracking(root), k=k, popularity=PopularityParams(), ease=EASEParams(),
            run_id=run_id, as_of=AS_OF, generated_at=AS_OF, ttl=timedelta(hours=36),
            num_threads=2, plan_run_id=plan,
        ).seconds  # fmt: skip
        busy = (_cpu_seconds() - cpu) / (time.perf_counter() - wall)
        return {**seconds, CORES_BUSY: busy}

    return run


def case_score_stage_ease(root: Path, k: int) -> Callable[[], object]:
    """The stage with EASE serving warm users: refitted on the warehouse tables, then scored
    (its own run id: the publish cases publish the other case's lists)."""
    return case_score_stage(root, k, "plan-ease", "bench-ease")


def case_floor(root: Path, k: int) -> Callable[[], object]:
    """A floor under the stage: the two things it cannot skip, at once. The kernel over every
    user (2 threads) while the stage's writer streams the rows the model stage wrote (held in
    memory beforehand, in the stage's chunks) to a file: checked against the contract, hashed
    and encoded as the stage does, and committed (the run ``bench-floor``). No reads, fits,
    vectors, checks or similar items: whatever the stage adds to this is the rest of its
    work."""
    from concurrent.futures import ThreadPoolExecutor

    from pipelines.score import CHUNK_USERS
    from pipelines.stores.scored import ScoredWriter, read_scored, scored_dir

    kernel = case_kernel(root, k)
    rows = read_scored(scored_dir(root / "lake", "bench")).recommendations
    chunks = [
        rows.slice(start, CHUNK_USERS * k) for start in range(0, rows.num_rows, CHUNK_USERS * k)
    ]

    def write() -> None:
        writer = ScoredWriter(root / "lake", "bench-floor")
        try:
            for chunk in chunks:
                writer.write(chunk)
            writer.commit(None, {})  # waits for the last chunk: a failed write raises here
        except BaseException:
            writer.abort()
            raise

    def run() -> object:
        with ThreadPoolExecutor(1) as pool:
            writing = pool.submit(write)
            kernel()
            writing.result()  # the writer's error, if any, is the case's
        return None

    return run


def _stores(root: Path, serving_url: str) -> Any:
    from pipelines.stores import Stores

    return Stores(
        landing=root / "landing",
        lake=root / "lake",
        warehouse=root / "warehouse.duckdb",
        serving_url=serving_url,
    )


def _publish_store(root: Path, url: str, times: int = 1) -> Callable[[], object]:
    """The serving store's part of a publish: load a version, keys, swap (no warehouse). Each
    of the ``times`` calls publishes under a new run id: republishing a live run is a no-op by
    design, which a best-of-two timing would otherwise report as the publish. The rows name
    their run (a publish checks), so each call's rows are relabelled here, before any timing."""
    import uuid

    import pyarrow as pa

    from pipelines.stores import scored, warehouse
    from pipelines.stores.serving import ServingStore, publish_recommendations

    run = scored.read_scored(scored.scored_dir(root / "lake", "bench"))
    (popular,) = warehouse.read_tables(root / "warehouse.duckdb", "popular_items")
    recs = run.recommendations
    at = recs.schema.get_field_index("run_id")
    runs = [f"bench-{uuid.uuid4().hex[:8]}" for _ in range(times)]
    tables = [recs.set_column(at, "run_id", pa.repeat(pa.scalar(r), recs.num_rows)) for r in runs]

    def publish() -> object:
        run_id, rows = runs.pop(), tables.pop()
        publication = publish_recommendations(
            ServingStore(url), rows, popular.to_arrow(),
            similar_items=run.similar_items, run_id=run_id, model_version="1",
            clock=lambda: datetime.now(UTC), checksum=run.checksum,
        )  # fmt: skip
        if publication.run_id != run_id:
            raise RuntimeError(f"publish of {run_id} served {publication.run_id}: not timed")
        return publication

    return publish


FLOOR = "floor: kernel while the stage's writer writes its rows (no reads, fits or checks)"
CASES: dict[str, Callable[[Path, int], Callable[[], object]]] = {
    "bare float32 matrix product (reference)": case_bare_product,
    "top-K kernel alone (2 threads)": case_kernel,
    "NumPy full product + argpartition": case_numpy_reference,
    f"LightFM predict, {SAMPLE:,} users (extrapolated)": case_lightfm_predict,
    "score stage (read, vectors, kernel, fill, suite, write)": case_score_stage,
    "score stage, EASE serving warm users (its fit included)": case_score_stage_ease,
    FLOOR: case_floor,
}


def _child(name: str, root: str, k: int, url: str, queue: Any) -> None:
    base = Path(root)
    if name.startswith("publish"):
        action = _publish_store(base, url, REPEAT)
    else:
        action = CASES[name](base, k)
    inputs = _rss_mb()
    best, detail = _best_of(action)
    peak = _rss_mb()
    if name.startswith("score stage") or name == FLOOR:  # the cases paired with the product
        # The reference in this process, after the stage's peak is read (its 2 GB would count
        # in it), alternating with the stage: the machine's speed drifts within a minute, so
        # these pairs' ratios are the ones to trust (see the docstring).
        detail = {**(detail or {}), **_paired_ratios(action, case_bare_product(base, k))}
    queue.put((best, peak, inputs, detail))


PAIRS = 5
BARE_MEDIAN, BARE_LOW, BARE_HIGH = "bare median", "bare low", "bare high"
RATIO_MEDIAN, RATIO_LOW, RATIO_HIGH = "ratio", "ratio low", "ratio high"
PAIRED = (BARE_MEDIAN, BARE_LOW, BARE_HIGH, RATIO_MEDIAN, RATIO_LOW, RATIO_HIGH)
CORES_BUSY = "cores busy"


def _paired_ratios(stage: Callable[[], object], bare: Callable[[], object]) -> dict[str, float]:
    """The stage's time over the bare product's, from PAIRS runs of each one after the other:
    the median ratio, the lowest and the highest, and the same of the bare product's seconds."""
    import numpy as np

    bare()  # its first run also pays for the first touch of BLAS's buffers
    ratios, bares = [], []
    for _ in range(PAIRS):
        start = time.perf_counter()
        stage()
        middle = time.perf_counter()
        bare()
        bares.append(time.perf_counter() - middle)
        ratios.append((middle - start) / bares[-1])
    return {
        BARE_MEDIAN: float(np.median(bares)),
        BARE_LOW: min(bares),
        BARE_HIGH: max(bares),
        RATIO_MEDIAN: float(np.median(ratios)),
        RATIO_LOW: min(ratios),
        RATIO_HIGH: max(ratios),
    }


def _cpu_seconds() -> float:
    """This process's CPU time so far, user and system, every thread."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _best_of(action: Callable[[], object]) -> tuple[float, dict[str, float] | None]:
    """The best of REPEAT timed calls (the first also pays page faults and caches), and what the
    last returned when it is a dict (the stage's parts)."""
    best, detail = float("inf"), None
    for _ in range(REPEAT):
        start = time.perf_counter()
        result = action()
        best = min(best, time.perf_counter() - start)
        detail = result if isinstance(result, dict) else None
        del result  # never two results alive at once
    return best, detail


def measure(name: str, root: Path, k: int, url: str = "") -> tuple[float, float, float, Any]:
    """(seconds, peak RSS MB, RSS MB before the timed call, what the case returned)."""
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(name, str(root), k, url, queue))
    process.start()
    result = queue.get()
    process.join()
    seconds, peak, inputs, detail = result
    if not isinstance(detail, dict):
        detail = None
    return seconds, peak, inputs, detail


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=53_424)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--postgres", default="postgresql://root@127.0.0.1:5432/test")
    parser.add_argument("--publishes", type=int, default=3, help="publishes under readers")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="recs-bench-serving-"))
    try:
        start = time.perf_counter()
        # In a child too: this process stays small, so the readers it spawns start small.
        builder = mp.get_context("spawn").Process(
            target=build_world, args=(root, args.users, args.items, args.k)
        )
        builder.start()
        builder.join()
        print(f"world: {args.users:,} users x {args.items:,} items, K={args.k} "
              f"({time.perf_counter() - start:.0f} s to build)\n")  # fmt: skip
        _score_table(root, args.k, args.users)
        _publish_table(root, args.k, args.postgres, args.publishes)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _score_table(root: Path, k: int, n_users: int) -> None:
    results = {name: measure(name, root, k) for name in CASES}
    bare = results["bare float32 matrix product (reference)"][0]
    print("| case | seconds | x bare product | peak RSS MB | inputs MB |")
    print("|---|---:|---:|---:|---:|")
    stage_details = {}
    for name, (seconds, peak, inputs, detail) in results.items():
        if name.startswith("LightFM"):
            seconds *= n_users / SAMPLE
        if detail:  # only the paired cases return details
            stage_details[name] = detail
        print(f"| {name} | {seconds:.2f} | {seconds / bare:.2f} | {peak:,.0f} | {inputs:,.0f} |")
    for name, detail in stage_details.items():
        paired = {key: detail.pop(key) for key in PAIRED if key in detail}
        busy = detail.pop(CORES_BUSY, None)
        print(f"\n{name}:")
        if detail:
            print("parts: " + ", ".join(f"{part} {s:.2f} s" for part, s in detail.items()))
        if busy:
            print(f"CPU time over wall time, the whole stage: {busy:.2f} cores busy of 2")
        if len(paired) == len(PAIRED):
            print(f"{PAIRS} runs, each followed by the bare product in its process: "
                  f"{paired[RATIO_MEDIAN]:.2f}x the product (median; "
                  f"{paired[RATIO_LOW]:.2f}-{paired[RATIO_HIGH]:.2f}x), the product "
                  f"{paired[BARE_MEDIAN]:.2f} s (median; {paired[BARE_LOW]:.2f}-"
                  f"{paired[BARE_HIGH]:.2f} s)")  # fmt: skip
    lightfm = results[f"LightFM predict, {SAMPLE:,} users (extrapolated)"][0] * n_users / SAMPLE
    stage = results["score stage (read, vectors, kernel, fill, suite, write)"][0]
    print(f"score stage vs LightFM predict: {lightfm / stage:.1f}x faster\n")


def _publish_table(root: Path, k: int, postgres: str, publishes: int) -> None:
    from pipelines.stores.scored import read_manifest, scored_dir

    manifest = read_manifest(scored_dir(root / "lake", "bench"))
    rows = manifest["recommendations"]
    users = [f"u{n:06d}" for n in range(int(manifest["n_users"]))]  # type: ignore[call-overload]
    stores = {"SQLite": f"sqlite:///{root / 'serving.sqlite'}", "PostgreSQL": postgres}
    print(f"| publish {rows['rows']:,} rows (serving store part) | seconds | peak RSS MB |")  # type: ignore[index]
    print("|---|---:|---:|")
    with _fresh_schema(postgres) as schema_url:
        stores["PostgreSQL"] = schema_url
        _publish_tables(root, k, stores, publishes, users)


def _publish_tables(
    root: Path, k: int, stores: dict[str, str], publishes: int, users: list[str]
) -> None:
    import numpy as np

    for label, url in stores.items():
        seconds, peak, _, _ = measure(f"publish {label}", root, k, url)
        print(f"| {label} | {seconds:.1f} | {peak:,.0f} |")
    print()
    print("| readers during publishes | reads | errors | empty | mixed | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    runs = [(store, pace, LOADS[0]) for store, pace in itertools.product(stores, (0.0, PACE_S))]
    runs += [(store, PACE_S, load) for store, load in itertools.product(stores, LOADS[1:])]
    for label, pace, load in runs:
        url = stores[label]
        rate = f"a read every {pace * 1000:.0f} ms" if pace else "as fast as it can"
        for kind, latencies, counts in _readers_during(root, url, publishes, k, users, pace, load):
            kind = f"{kind}, {rate}" + ("" if load == LOADS[0] else f"; {load}, no publish")
            lat = np.array(latencies) * 1000
            print(
                f"| {label}, {kind} | {counts['reads']:,} | {counts['errors']} | "
                f"{counts['empty']} | {counts['mixed']} | {np.percentile(lat, 50):.2f} | "
                f"{np.percentile(lat, 99):.2f} |"
            )


@contextmanager
def _fresh_schema(url: str) -> Iterator[str]:
    """A URL whose search_path is a new schema, dropped afterwards."""
    import uuid

    import adbc_driver_postgresql.dbapi as postgresql

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with postgresql.connect(url, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(f"create schema {schema}")
    try:
        yield f"{url}?options=-csearch_path%3D{schema}"
    finally:
        with postgresql.connect(url, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(f"drop schema {schema} cascade")


PACE_S = 0.005
"""The paced readers' pause between reads: a service answering requests, not a busy loop."""


LOADS = ("publishes", "nothing else", "two busy loops")
"""What runs beside the readers: the publishes, then two references on the same two cores (no
publish): the readers alone, and two processes spinning in Python (CPU only, no I/O, no
database), for REFERENCE_S seconds. Each load starts after the same 3 s of readers alone (their
latencies count too: more of a reference's than of three publishes'). If the references'
latencies match the publishes', the readers wait for a core, not for the store."""
REFERENCE_S = 10.0


def _spin(stop: str) -> None:
    """Keep one core busy until the file ``stop`` exists."""
    spins = 0
    while spins % 100_000 or not Path(stop).exists():
        spins += 1


def _readers_during(
    root: Path, url: str, publishes: int, k: int, users: list[str], pace: float,
    load: str = LOADS[0],
) -> list[tuple[str, list[float], Any]]:  # fmt: skip
    """Two persistent and two per-read reader processes while ``publishes`` publishes run (or
    another of the LOADS)."""
    import json

    from bench.readers import read_until_stopped

    tag = f"{abs(hash(url))}-{pace}-{LOADS.index(load)}"
    stop = root / f"stop-{tag}"
    outs = [root / f"reader-{tag}-{i}.json" for i in range(4)]
    context = mp.get_context("spawn")
    procs = [
        context.Process(
            target=read_until_stopped,
            args=(url, i >= 2, str(stop), str(o), users, k, False, pace),
        )
        for i, o in enumerate(outs)
    ]
    for p in procs:
        p.start()
    time.sleep(3)
    if load == LOADS[0]:
        for _ in range(publishes):
            _publish_store(root, url)()
    elif load == LOADS[2]:
        spun = Path(f"{stop}-spin")
        spinners = [context.Process(target=_spin, args=(str(spun),)) for _ in range(2)]
        for s in spinners:
            s.start()
        time.sleep(REFERENCE_S)
        spun.touch()
        for s in spinners:
            s.join()
    else:
        time.sleep(REFERENCE_S)
    stop.touch()
    for p in procs:
        p.join(120)
    out = []
    for kind, files in (("persistent", outs[:2]), ("connect per read", outs[2:])):
        counts: dict[str, int] = {"reads": 0, "errors": 0, "empty": 0, "mixed": 0}
        latencies: list[float] = []
        for f in files:
            data = json.loads(f.read_text())
            latencies += data.pop("latencies")
            for key in counts:
                counts[key] += int(data[key])
        out.append((kind, latencies, counts))
    return out


if __name__ == "__main__":
    main()
