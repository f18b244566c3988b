"""Score stage: top-K lists for every user, each segment served by what won it in training,
topped up from the popular list, gated by the recommendations suite, committed to the lake.

Users are scored in chunks (sorted by user id) from vectors to written rows, so memory follows the
chunk, not the user count: each chunk's lists are built, reduced to the suite's per-user counts
and streamed to the run's file; the suite judges every chunk's counts at the end, and only then
are the files committed (:mod:`pipelines.stores.scored`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

import numpy as np
import polars as pl
import pyarrow as pa
from tqdm import tqdm

from features.contracts import RECOMMENDATIONS, C, conform
from models.base import TrainingData
from models.baselines import PopularityParams, PopularityRecommender, SegmentPopularity
from models.ease import EASEParams, EASERecommender
from models.policy import SEGMENTS, fill_to_k
from models.rules import ItemRules, ListRules, item_rules
from pipelines.stores import Stores, cluster, warehouse
from pipelines.stores.scored import ScoredWriter, scored_at
from pipelines.stores.tracking import Tracking, load_champion, load_version
from pipelines.suites.recommendations import list_aggregates, validate_recommendations
from pipelines.suites.runner import ValidationError

CHUNK_USERS = 8_192
"""Users scored, checked and written at a time (memory: chunk x K rows, chunk x items floats).
On the ``large`` shape (the ``bench.serving`` world) with EASE serving warm users, 8,192
users peaked ~200 MB below 16,384, in the same time."""


@dataclass(frozen=True)
class ScoreReport:
    """Where the scored lists were committed, and who got what kind."""

    path: Path  # the run's scored directory (its manifest commits it)
    model_version: str
    n_users: int
    rows_by_source: dict[str, int]
    similar_items: Path | None = None
    seconds: dict[str, float] = field(default_factory=dict)  # where the time went


class _Lists(Protocol):
    def recommend(
        self,
        users: pl.DataFrame,
        k: int,
        *,
        exclude: pl.DataFrame | None = None,
        allowed_items: pl.Series | None = None,
        rules: ItemRules | None = None,
        num_threads: int = 1,
    ) -> pl.DataFrame: ...


def score(
    stores: Stores,
    tracking: Tracking,
    *,
    k: int,
    popularity: PopularityParams,
    ease: EASEParams,
    run_id: str,
    as_of: datetime,
    rules: ListRules | None = None,
    plan_run_id: str | None = None,
    model_version: str | None = None,
    plan_version: str | None = None,
    features_schema: str = warehouse.LATEST,
    generated_at: datetime,
    ttl: timedelta,
    num_threads: int,
    chunk_users: int = CHUNK_USERS,
    dask_address: str | None = None,
) -> ScoreReport:
    """Up to k recommendations for every user in ``user_features``, as of ``as_of``.

    Warm users (an event before ``as_of``) and cold users (attributes only) are each served by
    what won their segment in training ``plan_run_id`` (default: the last one; the warehouse's
    ``segment_choices``): the ``@champion`` model (``source`` model or cold_start), EASE refitted
    on the same tables (ease), segment popularity (segment_popular) or global popularity over
    some window (popular). Users the model does not describe, and the slots a list cannot fill,
    get the global popular list (only those users are filled). A list is k long unless fewer
    items may be recommended to the user. Never recommended: items the user had an event on
    before ``as_of``, pairs in the warehouse ``blocklist``, unavailable items and items of
    ``rules.excluded_categories``; ``rules`` also boost new items and cap items per category
    (the cap yields to the popular top-up when it would leave a list short). The model is
    ``model_version`` when given (the one this run refitted), else ``@champion``.
    ``plan_version`` takes the plan of the training that registered that version instead (the
    champion's, for a score-and-publish run). Feature tables are read from ``features_schema``.

    Each chunk of users is a shard: on the Dask cluster at ``dask_address`` when given (the
    fitted lists and rules broadcast once per worker; :mod:`pipelines.stores.cluster`), else in
    the process; either way the chunks are written in user order, the same files.

    Raises:
        ValidationError: the lists fail the recommendations suite (nothing is committed).
    """
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    warehouse.require_features_for(stores.warehouse, as_of, features_schema)
    interactions, users, items = warehouse.read_tables(
        stores.warehouse, "interactions", "user_features", "item_features", schema=features_schema
    )
    excluded = _excluded_pairs(interactions, warehouse.blocklist(stores.warehouse))
    resolved = item_rules(items, rules or ListRules(), as_of)
    available = items.filter(
        pl.col(C.available) & ~pl.col(C.item_id).is_in(resolved.excluded_items.implode())
    )[C.item_id]
    data = TrainingData(interactions.filter(pl.col("positive")), users, items, as_of)
    fallback = PopularityRecommender.fit(data, popularity)
    champion = load_version(tracking, model_version) if model_version else load_champion(tracking)
    plan = warehouse.serving_plan(stores.warehouse, plan_run_id, plan_version) or dict.fromkeys(
        SEGMENTS, "model"
    )
    serving = _serving_lists(
        plan, champion.recommender if champion else None, data, popularity, ease
    )
    warm_ids = interactions[C.user_id].unique().implode()
    # The chunks need only the pairs (their columns are kept by ``excluded``): the rest of the
    # interactions and the positives' copy go before the chunks' buffers are allocated.
    del data, interactions
    users = users.sort(C.user_id).with_columns(_warm=pl.col(C.user_id).is_in(warm_ids))
    seconds["read and fit"] = time.perf_counter() - started

    writer = ScoredWriter(stores.lake, run_id)
    constants = {
        "model_version": "popularity",
        C.run_id: run_id,
        "generated_at": generated_at,
        "expires_at": generated_at + ttl,
    }
    if champion is not None and "model" in plan.values():
        constants["model_version"] = champion.version
    aggregates, by_source = [], pl.DataFrame(schema={C.source: pl.String, "n": pl.UInt32})
    try:
        with cluster.connect(dask_address) as client:
            threads = cluster.threads_per_shard(client, num_threads)
            bundle = _Bundle(serving, fallback, k, available, resolved, threads, constants)
            # What every chunk reads goes to each worker once; chunks go as they are cut.
            shared = cluster.broadcast(client, bundle)
            chunks = zip(
                users.iter_slices(chunk_users),
                _by_chunk(excluded, users[C.user_id], chunk_users),
                strict=True,
            )
            results = cluster.map_in_order(client, _score_chunk, shared, chunks)
            bar = tqdm(results, total=-(-users.height // chunk_users), desc="score",
                       unit="chunk", disable=None, leave=False)  # fmt: skip
            for table, counts, sources, spent in bar:
                for part, secs in spent.items():
                    seconds[part] = seconds.get(part, 0.0) + secs
                aggregates.append(counts)
                by_source = pl.concat([by_source, sources])
                tick = time.perf_counter()
                writer.write(table)
                del table
                _release_freed_memory()
                seconds["write"] = seconds.get("write", 0.0) + time.perf_counter() - tick
        tick = time.perf_counter()
        if not aggregates:  # no users at all: the suite still runs, on an empty table
            aggregates.append(
                list_aggregates(
                    pl.DataFrame(schema=RECS_COLUMNS), k=k, expected_users=users[C.user_id],
                    excluded=excluded, available_items=available,
                )
            )  # fmt: skip
        failures = validate_recommendations(
            pl.concat(aggregates), n_users=users.height, gx_root=stores.gx_root
        )
        seconds["suite"] = time.perf_counter() - tick
        if failures:
            raise ValidationError(f"recommendations of run {run_id}", failures)
        tick = time.perf_counter()
        similar = None
        if champion is not None:
            similar = champion.recommender.similar_items(
                k, allowed_items=available, num_threads=num_threads
            ).to_arrow()
        seconds["similar items"] = time.perf_counter() - tick
        counts = by_source.group_by(C.source).agg(pl.col("n").sum()).sort(C.source)
        rows_by_source = {str(s): int(n) for s, n in counts.iter_rows()}
        out = writer.commit(
            similar,
            {
                "scored_at": scored_at(generated_at),
                "as_of": as_of.isoformat(),
                "model_version": constants["model_version"],
                "n_users": users.height,
                "rows_by_source": rows_by_source,
            },
        )
    except BaseException:
        writer.abort()
        raise
    return ScoreReport(
        out,
        str(constants["model_version"]),
        users.height,
        rows_by_source,
        out / "similar_items.parquet" if similar is not None else None,
        seconds,
    )


@dataclass(frozen=True)
class _Bundle:
    """What every chunk of a score run reads (broadcast once per worker on a cluster)."""

    serving: dict[str, _Lists]
    fallback: PopularityRecommender
    k: int
    available: pl.Series
    rules: ItemRules
    num_threads: int
    constants: dict[str, object]


def _score_chunk(
    bundle: _Bundle, work: tuple[pl.DataFrame, pl.DataFrame]
) -> tuple[pa.Table, pl.DataFrame, pl.DataFrame, dict[str, float]]:
    """One shard of the score stage: a chunk of users (and the pairs they must not get) to
    their rows with the run's constants, the suite's per-user counts, rows per source and
    where the time went."""
    chunk, chunk_excluded = work
    tick = time.perf_counter()
    lists = _chunk_lists(
        chunk, bundle.serving, bundle.fallback, bundle.k, chunk_excluded, bundle.available,
        bundle.rules, bundle.num_threads,
    )  # fmt: skip
    spent = {"lists": time.perf_counter() - tick}
    tick = time.perf_counter()
    counts = list_aggregates(
        lists, k=bundle.k, expected_users=chunk[C.user_id], excluded=chunk_excluded,
        available_items=bundle.available,
    )  # fmt: skip
    sources = lists.group_by(C.source).agg(n=pl.len())
    spent["checks"] = time.perf_counter() - tick
    return _with_constants(lists, bundle.constants), counts, sources, spent


def _release_freed_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc ``malloc_trim``; elsewhere a
    no-op). A chunk's buffers, freed, stayed in glibc's arenas and the next chunk's came out
    of fresh pages: the stage's peak RSS rose chunk after chunk (on the ``large`` shape with
    EASE: 1,956 -> 1,757 MB with a trim after each chunk)."""
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is not None:
        trim(0)


def _load_libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


_LIBC = _load_libc()


def _excluded_pairs(interactions: pl.DataFrame, blocklist: pl.DataFrame) -> pl.DataFrame:
    """Every (user_id, item_id) pair never to recommend, each once (the suite's counts join on
    them): the interactions' pairs (one row per pair), then the blocked pairs not among them.
    Only the blocked users' interactions are joined: an anti-join against all of them hashed
    every pair (RSS +400 MB at that step on the ``large`` shape, even with an empty
    blocklist)."""
    pairs = interactions.select(C.user_id, C.item_id)
    blocked = blocklist.select(C.user_id, C.item_id).unique()
    if blocked.height == 0:
        return pairs
    theirs = pairs.join(blocked.select(C.user_id).unique(), on=C.user_id, how="semi")
    return pl.concat([pairs, blocked.join(theirs, on=[C.user_id, C.item_id], how="anti")])


def _by_chunk(
    excluded: pl.DataFrame, user_ids: pl.Series, chunk_users: int
) -> Iterator[pl.DataFrame]:
    """Each chunk's pairs of ``excluded`` (``user_ids`` sliced in ``chunk_users``): the pairs are
    put in the users' order once, so a chunk's are a slice, not a join over every pair."""
    positions = pl.DataFrame({C.user_id: user_ids}).with_row_index("_position")
    ordered = excluded.join(positions, on=C.user_id, how="inner").sort("_position")
    starts = np.arange(0, user_ids.len(), chunk_users)
    edges = [*np.searchsorted(ordered["_position"].to_numpy(), starts).tolist(), ordered.height]
    pairs = ordered.drop("_position")
    for start, stop in itertools.pairwise(edges):
        yield pairs.slice(start, stop - start)


RECS_COLUMNS = {
    C.user_id: pl.String,
    C.rank: pl.Int32,
    C.item_id: pl.String,
    C.score: pl.Float64,
    C.source: pl.String,
}


def _serving_lists(
    plan: dict[str, str],
    model: _Lists | None,
    data: TrainingData,
    popularity: PopularityParams,
    ease: EASEParams,
) -> dict[str, _Lists]:
    """Segment -> what serves it, each fitted once for every chunk. ``model`` segments without a
    champion are left out (the popular top-up serves them)."""
    serving: dict[str, _Lists] = {}
    for segment, candidate in plan.items():
        if candidate == "model":
            if model is not None:
                serving[segment] = model
        elif candidate == "ease":
            serving[segment] = EASERecommender.fit(data, ease)
        elif candidate.startswith("popular:"):
            days = candidate.split(":", 1)[1]
            window = PopularityParams(window_days=None if days == "all" else int(days))
            serving[segment] = PopularityRecommender.fit(data, window)
        elif candidate.startswith("segment:"):
            attribute = candidate.split(":", 1)[1]
            serving[segment] = SegmentPopularity.fit(data, popularity, attribute)
    return serving


def _chunk_lists(
    chunk: pl.DataFrame,
    serving: dict[str, _Lists],
    fallback: PopularityRecommender,
    k: int,
    excluded: pl.DataFrame,
    available: pl.Series,
    rules: ItemRules,
    num_threads: int,
) -> pl.DataFrame:
    """One chunk of users' lists: one row per user_id x rank, sorted."""
    # Segments served by the same fitted lists (the champion for warm and cold users, say) are
    # scored in one call: one pass of the kernel and of the exclusions over the chunk.
    by_lists: dict[int, tuple[_Lists, list[bool]]] = {}
    for segment, lists in serving.items():
        by_lists.setdefault(id(lists), (lists, []))[1].append(segment == "warm")
    parts = []
    for lists, warm in by_lists.values():
        group = chunk.filter(pl.col("_warm").is_in(warm)).drop("_warm")
        if group.height == 0:
            continue
        describes = getattr(lists, "describes", None)
        if describes is not None:
            group = group.filter(pl.Series(describes(group)))
        parts.append(
            lists.recommend(
                group, k, exclude=excluded, allowed_items=available, rules=rules,
                num_threads=num_threads,
            )
        )  # fmt: skip
    primary = pl.concat(parts) if parts else pl.DataFrame(schema=RECS_COLUMNS)
    # Only the users whose list is short (not described, too few items under the rules) are
    # topped up from the popular list: no second scoring pass over everyone. A list's ranks
    # run 1..n, so a user is full exactly when their rank k is there.
    full = primary.filter(pl.col(C.rank) == k).select(C.user_id)
    short = chunk.select(C.user_id).join(full, on=C.user_id, how="anti")
    if short.height:
        top_up = fallback.recommend(
            short, k, exclude=excluded.join(short, on=C.user_id, how="semi"),
            allowed_items=available, num_threads=num_threads,
        )  # fmt: skip
        filled = fill_to_k(primary.join(short, on=C.user_id, how="semi"), top_up, k)
        primary = pl.concat([primary.join(short, on=C.user_id, how="anti"), filled])
    return primary.select(list(RECS_COLUMNS)).sort(C.user_id, C.rank)


def _with_constants(lists: pl.DataFrame, constants: dict[str, object]) -> pa.Table:
    """A chunk's rows with the run's constant columns, as the ``RECOMMENDATIONS`` contract."""
    table = lists.to_arrow()
    n = table.num_rows
    for name in ("model_version", C.run_id, "generated_at", "expires_at"):
        kind = RECOMMENDATIONS.field(name).type
        table = table.append_column(name, pa.repeat(pa.scalar(constants[name], kind), n))
    return conform(table, RECOMMENDATIONS, "scored recommendations")
