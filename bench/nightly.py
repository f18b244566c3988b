"""Wall time and peak memory of each stage of the nightly run, per preset.

Each stage runs in a fresh child process so its peak RSS is its own (imports included; the
``import`` row shows what the libraries alone take). A second table compares the blocked,
threaded top-K kernel with the plain full-matrix reference (one product, one ``argpartition``),
both measured in this run. A benchmark, not a test: nothing here asserts on time.

    python -m bench.nightly --presets demo large [--workdir /tmp/recs-bench]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from queue import Empty
from typing import Any

SERVING_K = 100
"""The published lists' length (the product's default, ``RECS_SERVING_K``)."""
STAGES = ("generate", "extract", "validate", "features", "train", "score", "publish")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _stage(name: str, preset: str, root: str, queue: Any) -> None:
    from features.signal import SignalParams
    from models.baselines import PopularityParams
    from models.ease import EASEParams
    from models.params import LightFMParams
    from models.policy import GateParams
    from pipelines.extract import extract
    from pipelines.features import build_features
    from pipelines.publish import publish
    from pipelines.score import score
    from pipelines.sources.readers import FileSource
    from pipelines.sources.synthetic import PRESETS, write_landing
    from pipelines.stores import Stores as Paths
    from pipelines.stores import scored
    from pipelines.stores.tracking import Tracking
    from pipelines.suites.events import ValidationThresholds
    from pipelines.train import train
    from pipelines.validate import validate

    base = Path(root)
    paths = Paths(
        landing=base / "landing",
        lake=base / "lake",
        warehouse=base / "warehouse.duckdb",
        serving_url=f"sqlite:///{base / 'serving.sqlite'}",
        gx_root=base,  # as the flow runs: file context, stored results, Data Docs
    )
    tracking = Tracking(
        f"sqlite:///{base / 'mlflow.db'}", base / "artifacts", "bench", "bench-lightfm"
    )
    now = datetime.now(UTC)
    # One as_of for every stage (each runs in its own process): midnight, after yesterday's data.
    as_of = now.replace(hour=0, minute=0, second=0, microsecond=0)
    before = _rss_mb()
    start = time.perf_counter()
    rows: int | str = ""
    if name == "generate":
        # Data ending yesterday, as `recs generate` writes it: later events would be "future".
        params = PRESETS[preset]
        params = params.model_copy(update={"start": now.date() - timedelta(days=params.days)})
        rows = write_landing(params, paths.landing).n_lines
    elif name == "extract":
        rows = extract(paths, sources=[FileSource()], run_id="bench", ingested_at=now).rows_read
    elif name == "validate":
        rows = validate(paths, run_id="bench", now=now, thresholds=ValidationThresholds()).rows_in
    elif name == "features":
        report = build_features(
            paths, as_of=as_of, holdout_days=7, top_k=SERVING_K, signal=SignalParams(),
            popularity=PopularityParams(), min_warm_users=GateParams().min_users,
        )  # fmt: skip
        rows = report.rows["interactions"]
    elif name == "train":
        report_t = train(
            paths, tracking, params=LightFMParams(num_threads=2), signal=SignalParams(),
            popularity=PopularityParams(), ease=EASEParams(), gate=GateParams(), k=10,
            run_id="bench", as_of=as_of, window_start=as_of - timedelta(days=7),
        )  # fmt: skip
        rows = int(report_t.metrics["model_n_users"])
        queue.put(("metrics", report_t.metrics))
    elif name == "score":
        rows = score(
            paths, tracking, k=SERVING_K, popularity=PopularityParams(), ease=EASEParams(),
            run_id="bench",
            as_of=as_of, generated_at=now,
            ttl=timedelta(hours=36), num_threads=2,
        ).n_users  # fmt: skip
    elif name == "publish":
        rows = publish(
            paths, recommendations=scored.latest_scored(paths.lake), clock=lambda: now
        ).n_rows
    queue.put(("stage", (name, time.perf_counter() - start, rows, _rss_mb(), before)))


def _in_child(fn: Callable[..., None], *args: Any) -> list[tuple[str, Any]]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=fn, args=(*args, queue))
    proc.start()
    # Read while the child runs: a child cannot exit before what it put is read (join first
    # deadlocks once the training's metrics outgrow the pipe's buffer, as they did on `large`).
    out = []
    while proc.is_alive() or not queue.empty():
        try:
            out.append(queue.get(timeout=0.2))
        except Empty:
            continue
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"{fn.__name__}{args} failed with exit code {proc.exitcode}")
    return out


def _imports(queue: Any) -> None:
    before = _rss_mb()
    start = time.perf_counter()
    import flows.nightly  # noqa: F401

    queue.put(("stage", ("import", time.perf_counter() - start, "", _rss_mb(), before)))


def _scoring(n_users: int, n_items: int, queue: Any) -> None:
    import numpy as np

    from models.scoring import top_k

    rng = np.random.default_rng(0)
    users = rng.normal(size=(n_users, 49)).astype(np.float32)
    items = rng.normal(size=(n_items, 49)).astype(np.float32)
    start = time.perf_counter()
    scores = users @ items.T
    ref = np.argpartition(-scores, 9, axis=1)[:, :10]
    ref_s = time.perf_counter() - start
    del scores, ref
    results = {"reference: full matrix + argpartition, 1 thread": ref_s}
    for threads in (1, 2):
        start = time.perf_counter()
        top_k(users, items, 10, num_threads=threads)
        results[f"top_k blocked + sorted, {threads} thread(s)"] = time.perf_counter() - start
    queue.put(("scoring", (n_users, n_items, results)))


def run(presets: list[str], workdir: Path, stages: list[str]) -> None:
    for preset in presets:
        root = workdir / preset
        if "generate" in stages or not (root / "landing").exists():
            shutil.rmtree(root, ignore_errors=True)
            stages = ["generate", *[s for s in stages if s != "generate"]]
        else:  # reuse the generated landing files, start the stores afresh
            for name in ("lake", "warehouse.duckdb", "serving.sqlite", "mlflow.db", "artifacts"):
                shutil.rmtree(root / name, ignore_errors=True)
                (root / name).unlink(missing_ok=True)
        root.mkdir(parents=True, exist_ok=True)
        rows: list[tuple[str, float, Any, float, float]] = []
        metrics: dict[str, float] = {}
        for _, value in _in_child(_imports):
            rows.append(value)
        for stage in [s for s in STAGES if s in stages]:
            for kind, value in _in_child(_stage, stage, preset, str(root)):
                if kind == "stage":
                    rows.append(value)
                else:
                    metrics = value
        print(f"\n## nightly stages, preset {preset!r}\n")
        print("| stage | seconds | rows | rows/s | peak RSS MB | RSS at start MB |")
        print("|---|--:|--:|--:|--:|--:|")
        for name, secs, n, peak, before in rows:
            rate = f"{n / secs:,.0f}" if isinstance(n, int) and secs > 0 else ""
            count = f"{n:,}" if isinstance(n, int) else ""
            print(f"| {name} | {secs:.2f} | {count} | {rate} | {peak:.0f} | {before:.0f} |")
        total = sum(r[1] for r in rows if r[0] not in ("import", "generate"))
        print(f"\npipeline total (extract..publish): {total:.1f} s")
        if metrics:
            model_p, base_p = metrics["model_precision_at_10"], metrics["baseline_precision_at_10"]
            print(
                f"precision@10 model {model_p:.4f} vs popularity {base_p:.4f} "
                f"(ratio {model_p / base_p:.2f})"
            )
    for n_users, n_items in ((5000, 1000), (53_424, 10_000)):
        ((_, (nu, ni, results)),) = _in_child(_scoring, n_users, n_items)
        ref = results["reference: full matrix + argpartition, 1 thread"]
        print(f"\n## top-10 scoring kernel, {nu:,} users x {ni:,} items\n")
        print("| method | seconds | speed vs reference |")
        print("|---|--:|--:|")
        for method, secs in results.items():
            print(f"| {method} | {secs:.2f} | {ref / secs:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--presets", nargs="+", default=["demo"], choices=["tiny", "demo", "large"])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/recs-bench"))
    parser.add_argument(
        "--stages", nargs="+", default=list(STAGES), choices=STAGES,
        help="stages to run (without generate: reuse the landing files of the last run)",
    )  # fmt: skip
    args = parser.parse_args()
    run(args.presets, args.workdir, args.stages)


if __name__ == "__main__":
    main()
