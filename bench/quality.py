"""Quality of the published lists on MovieLens 100K, through the product's own path, beside the
references, in one run. Printed as tables; nothing is asserted.

Protocol (written before any number was seen; see README "Quality"):

(a) Global cutoff = the 80th percentile of rating timestamps. Truth: ratings >= 4 at or after
    it, on items the user had not rated before it. Warm users have a rating before the cutoff,
    cold users none (they are scored from attributes). Two modes through the product
    (``recs import movielens`` then ``recs run nightly --as-of <cutoff>``, lists read back from
    the serving store): "truncated" imports only the ratings before the cutoff, "backfill"
    imports all of them. The two must publish the same lists.
(b) Per user: each user's ratings >= 4 sorted by (timestamp, item id), the last 20% (at least
    one) held out; everything else is imported and the product runs at the night after the last
    rating. All users are warm.

Product settings for ML-100k, fixed up front: a 28-day evaluation window (``RECS_HOLDOUT_DAYS``;
ML-100k has few users a week), one thread (the two modes must be comparable), defaults
otherwise. References, on the same users: popularity (all time; last 7, 30, 90 days; distinct
users with a rating >= 4), EASE (Steck 2019, on positives, lambda 500) and an untuned LightFM
hybrid (WARP, 64 components, learning rate 0.05, 30 epochs, positives >= 4, user and item
attributes). Every metric has a 95% bootstrap interval over users. The "tuned" rows run
``recs tune`` first (40 trials, seed 0, at most 20 minutes), whose window is the 28 days before
the nightly's: the study never sees the truth, nor the window the gate judges on.

Run: ``python -m bench.quality [--ml100k PATH]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp

K = 10
DAY = 86_400
ROOT = Path(__file__).resolve().parent.parent


def _ratings(src: Path) -> pl.DataFrame:
    return pl.read_csv(
        src / "u.data", separator="\t", has_header=False, new_columns=["u", "i", "r", "t"]
    ).with_columns(pl.col("u").cast(pl.String), pl.col("i").cast(pl.String))


def _write_copy(src: Path, dst: Path, ratings: pl.DataFrame) -> Path:
    """A MovieLens folder with the given ratings and the original catalogs."""
    dst.mkdir(parents=True)
    for name in ("u.user", "u.item", "u.genre", "u.occupation"):
        if (src / name).exists():
            shutil.copy(src / name, dst / name)
    ratings.select("u", "i", "r", "t").write_csv(
        dst / "u.data", separator="\t", include_header=False
    )
    return dst


TUNE_TRIALS = 40
"""The study's budget in the "tuned" rows (fixed up front, with seed 0 and a 20-minute cap)."""


def _product(src: Path, as_of: datetime, work: Path, tuned: bool = False) -> pl.DataFrame:
    """Import ``src`` and run the nightly flow at ``as_of``; the published lists. ``tuned``:
    first extract, validate and run ``recs tune --as-of`` (its window: the 28 days before the
    nightly's own, so the lists are judged on data the study never saw)."""
    env = {
        **os.environ,
        "RECS_DATA_DIR": str(work / "data"),
        "RECS_MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
        "RECS_MLFLOW_ARTIFACTS_DIR": str(work / "artifacts"),
        "RECS_HOLDOUT_DAYS": "28",
        "RECS_NUM_THREADS": "1",
    }
    cli = [sys.executable, "-m", "flows.cli"]
    study = [
        ["run", "extract"],
        ["run", "validate"],
        ["tune", "--as-of", as_of.isoformat(), "--trials", str(TUNE_TRIALS),
         "--timeout-minutes", "20", "--seed", "0"],
    ]  # fmt: skip
    for args in (
        ["import", "movielens", str(src)],
        *(study if tuned else []),
        ["run", "nightly", "--as-of", as_of.isoformat()],
    ):
        done = subprocess.run([*cli, *args], env=env, cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"recs {' '.join(args)} failed:\n{done.stderr[-3000:]}")
        if args[0] == "tune":
            print(f"tuned ({work.name}): {done.stdout.strip()}")
    with sqlite3.connect(work / "data" / "serving.sqlite") as db:
        rows = db.execute("select user_id, rank, item_id, source from recommendations").fetchall()
    return pl.DataFrame(rows, schema=["u", "rank", "i", "source"], orient="row")


def _per_user(lists: dict[str, list[str]], truth: dict[str, set[str]]) -> np.ndarray:
    """users x (precision, recall, ndcg) at K, for every truth user (no list: zeros)."""
    out = np.zeros((len(truth), 3))
    discounts = 1.0 / np.log2(np.arange(2, K + 2))
    for row, (user, relevant) in enumerate(sorted(truth.items())):
        top = lists.get(user, [])[:K]
        hits = np.array([item in relevant for item in top], dtype=float)
        ideal = discounts[: min(len(relevant), K)].sum()
        out[row] = (
            hits.sum() / K,
            hits.sum() / len(relevant),
            (hits * discounts[: hits.size]).sum() / ideal,
        )
    return out


def _ci(values: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(1000, values.size))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(values.mean()), float(low), float(high)


def _lists_from_scores(
    users: list[str], items: list[str], scores: Callable[[list[int]], np.ndarray],
    seen: sp.csr_matrix, user_index: dict[str, int],
) -> dict[str, list[str]]:  # fmt: skip
    out = {}
    rows = [user_index.get(u, -1) for u in users]
    block = scores([max(r, 0) for r in rows]).astype(float)
    for n, (user, row) in enumerate(zip(users, rows, strict=True)):
        s = block[n].copy()
        if row >= 0:
            s[seen[row].indices] = -np.inf
        top = np.argsort(-s, kind="stable")[:K]
        out[user] = [items[i] for i in top]
    return out


def _same_for_all(scores: np.ndarray) -> Callable[[list[int]], np.ndarray]:
    return lambda rows: np.tile(scores, (len(rows), 1))


def _references(
    train: pl.DataFrame, users_cat: pl.DataFrame, items_cat: pl.DataFrame, cutoff: float,
    truth_users: list[str],
) -> dict[str, dict[str, list[str]]]:  # fmt: skip
    """Reference lists for the truth users, fitted on ``train`` only."""
    from lightfm import LightFM
    from lightfm.data import Dataset

    items = sorted(items_cat["i"].to_list(), key=int)
    item_index = {i: n for n, i in enumerate(items)}
    all_users = sorted(set(users_cat["u"].to_list()) | set(train["u"].to_list()), key=int)
    user_index = {u: n for n, u in enumerate(all_users)}

    def matrix(rows: pl.DataFrame) -> sp.csr_matrix:
        coords = ([user_index[u] for u in rows["u"]], [item_index[i] for i in rows["i"]])
        return sp.csr_matrix((np.ones(rows.height), coords), shape=(len(all_users), len(items)))

    seen = matrix(train)
    pos = train.filter(pl.col("r") >= 4)
    refs: dict[str, dict[str, list[str]]] = {}
    for name, days in (("popularity all time", None), ("popularity 7 days", 7),
                       ("popularity 30 days", 30), ("popularity 90 days", 90)):  # fmt: skip
        part = pos if days is None else pos.filter(pl.col("t") >= cutoff - days * DAY)
        counts = np.zeros(len(items))
        for i, n in part.group_by("i").agg(pl.col("u").n_unique()).iter_rows():
            counts[item_index[i]] = n
        refs[name] = _lists_from_scores(truth_users, items, _same_for_all(counts), seen, user_index)
    x = matrix(pos).toarray()
    gram = x.T @ x
    gram[np.diag_indices(len(items))] += 500.0
    inv = np.linalg.inv(gram)
    b = -inv / np.diag(inv)
    b[np.diag_indices(len(items))] = 0.0
    refs["EASE (lambda 500)"] = _lists_from_scores(
        truth_users, items, lambda rows: x[rows] @ b, seen, user_index
    )
    ds = Dataset()
    user_feats = [
        f"{c}={v}"
        for c in ("gender", "age_band", "occupation")
        for v in users_cat[c].unique().sort()
    ]
    item_feats = sorted({f"genre={g}" for gs in items_cat["genres"] for g in gs})
    ds.fit(all_users, items, user_features=user_feats, item_features=item_feats)
    inter, _ = ds.build_interactions(zip(pos["u"], pos["i"], strict=True))
    uf = ds.build_user_features(
        (u, [f"{c}={v}" for c, v in zip(("gender", "age_band", "occupation"), rest, strict=True)])
        for u, *rest in users_cat.select("u", "gender", "age_band", "occupation").iter_rows()
    )
    itf = ds.build_item_features(
        (i, [f"genre={g}" for g in gs]) for i, gs in items_cat.select("i", "genres").iter_rows()
    )
    model = LightFM(no_components=64, loss="warp", learning_rate=0.05, random_state=0)
    model.fit(inter, user_features=uf, item_features=itf, epochs=30, num_threads=1)
    item_bias, item_vectors = model.get_item_representations(itf)
    _, user_vectors = model.get_user_representations(uf)
    refs["LightFM hybrid, untuned"] = _lists_from_scores(
        truth_users,
        items,
        lambda rows: user_vectors[rows] @ item_vectors.T + item_bias,
        seen,
        user_index,
    )
    return refs


def _catalogs(src: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    users = pl.read_csv(
        src / "u.user", separator="|", has_header=False,
        new_columns=["u", "age", "gender", "occupation", "zip"],
        schema_overrides={"zip": pl.String},
    ).with_columns(
        pl.col("u").cast(pl.String),
        age_band=pl.col("age")
        .cut([17, 24, 34, 44], labels=["<18", "18-24", "25-34", "35-44", "45+"])
        .cast(pl.String),
    )  # fmt: skip
    genres = [
        line.split("|")[0]
        for line in (src / "u.genre").read_text(encoding="latin-1").splitlines()
        if line
    ]
    raw = pl.read_csv(
        src / "u.item", separator="|", has_header=False, encoding="utf8-lossy",
        new_columns=["i", "title", "date", "video", "url", *genres],
    )  # fmt: skip
    items = raw.select(
        pl.col("i").cast(pl.String),
        genres=pl.concat_list(
            [pl.when(pl.col(g) == 1).then(pl.lit(g)) for g in genres]
        ).list.drop_nulls(),
    )
    return users, items


def _table(title: str, rows: list[tuple[str, dict[str, np.ndarray]]]) -> None:
    segments = list(rows[0][1])
    print(f"\n{title}\n")
    head = " | ".join(f"{s} P@{K} / R@{K} / nDCG@{K} (n)" for s in segments)
    print(f"| candidate | {head} |")
    print("|---|" + "---|" * len(segments))
    for name, per_segment in rows:
        cells = []
        for values in per_segment.values():
            p, lo, hi = _ci(values[:, 0])
            cells.append(
                f"{p:.3f} [{lo:.3f}, {hi:.3f}] / {values[:, 1].mean():.3f} / "
                f"{values[:, 2].mean():.3f} ({values.shape[0]})"
            )
        print(f"| {name} | " + " | ".join(cells) + " |")


def global_cutoff(src: Path, work: Path) -> None:
    ratings = _ratings(src)
    cutoff = float(np.percentile(ratings["t"].to_numpy(), 80))
    as_of = datetime.fromtimestamp(cutoff, UTC)
    before, after = ratings.filter(pl.col("t") < cutoff), ratings.filter(pl.col("t") >= cutoff)
    seen = set(zip(before["u"], before["i"], strict=True))
    truth: dict[str, set[str]] = {}
    for u, i in after.filter(pl.col("r") >= 4).select("u", "i").iter_rows():
        if (u, i) not in seen:
            truth.setdefault(u, set()).add(i)
    warm_ids = set(before["u"].to_list())
    segments = {
        "warm": {u: t for u, t in truth.items() if u in warm_ids},
        "cold": {u: t for u, t in truth.items() if u not in warm_ids},
    }
    users_cat, items_cat = _catalogs(src)
    cut = _write_copy(src, work / "cut", before)
    published = {
        "truncated": _product(cut, as_of, work / "truncated"),
        "backfill": _product(src, as_of, work / "backfill"),
        "truncated, tuned": _product(cut, as_of, work / "truncated-tuned", tuned=True),
        "backfill, tuned": _product(src, as_of, work / "backfill-tuned", tuned=True),
    }
    rows = []
    for mode, lists in published.items():
        by_user = {u: g.sort("rank")["i"].to_list() for (u,), g in lists.group_by("u")}
        rows.append((f"product ({mode})", {s: _per_user(by_user, t) for s, t in segments.items()}))
        sources = (
            lists.filter(pl.col("u").is_in(list(truth))).group_by("source").len().sort("source")
        )
        print(f"{mode}: sources of the truth users' rows {dict(sources.iter_rows())}")
    for suffix in ("", ", tuned"):
        a, b = (
            published[m + suffix].sort("u", "rank").select("u", "rank", "i")
            for m in ("truncated", "backfill")
        )
        print(f"truncated and backfill{suffix} publish the same lists: {a.equals(b)}")
    refs = _references(before, users_cat, items_cat, cutoff, sorted(truth))
    rows += [
        (name, {s: _per_user(lists_, t) for s, t in segments.items()})
        for name, lists_ in refs.items()
    ]
    _table(f"(a) global cutoff {as_of:%Y-%m-%d %H:%M} UTC: truth = ratings >= 4 after it", rows)


def per_user(src: Path, work: Path) -> None:
    ratings = _ratings(src)
    pos = ratings.filter(pl.col("r") >= 4).sort("u", "t", "i")
    ranked = pos.with_columns(
        n=pl.len().over("u"), k=pl.int_range(pl.len()).over("u")
    ).with_columns(
        held=pl.col("k") >= pl.col("n") - (pl.col("n") * 0.2).ceil().cast(pl.Int64).clip(1)
    )
    held = ranked.filter(pl.col("held")).select("u", "i")
    train = ratings.join(held, on=["u", "i"], how="anti")
    truth: dict[str, set[str]] = {}
    for u, i in held.iter_rows():
        truth.setdefault(u, set()).add(i)
    last = datetime.fromtimestamp(int(ratings["t"].max()), UTC)  # type: ignore[arg-type]
    as_of = (last + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    copy = _write_copy(src, work / "pu", train)
    rows = []
    for name, tuned in (("product", False), ("product (tuned)", True)):
        lists = _product(copy, as_of, work / name.replace(" ", "-"), tuned=tuned)
        by_user = {u: g.sort("rank")["i"].to_list() for (u,), g in lists.group_by("u")}
        rows.append((name, {"all users": _per_user(by_user, truth)}))
    users_cat, items_cat = _catalogs(src)
    refs = _references(train, users_cat, items_cat, as_of.timestamp(), sorted(truth))
    rows += [(name, {"all users": _per_user(lists_, truth)}) for name, lists_ in refs.items()]
    _table("(b) per user: the last 20% of each user's ratings >= 4 held out", rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    beside = ROOT.parent / "shared" / "data" / "ml-100k"
    default = beside if beside.exists() else Path("/work/shared/data/ml-100k")
    parser.add_argument("--ml100k", type=Path, default=default)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        global_cutoff(args.ml100k, Path(tmp) / "a")
        per_user(args.ml100k, Path(tmp) / "b")


if __name__ == "__main__":
    main()
