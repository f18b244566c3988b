"""Score stage: top-K lists for every user, each segment served by what won it in training,
topped up from the popular list, gated by the recommendations suite, committed to the lake.

Users are scored in chunks (sorted by user id) from vectors to written rows, so memory follows the
chunk, not the user count: each chunk's lists are built, reduced to the suite's per-user counts
and streamed to the run's file; the suite judges every chunk's counts at the end, and only then
are the files committed (:mod:`pipelines.stores.scored`).

A chunk's lists stay integer codes from the kernel to the writer: users x k arrays of positions
in the catalog (``item_features``), scores and source codes. The pairs never to recommend are
one users x items matrix built once; each candidate gets its rows and, once per run, the
catalog in its own item order (:class:`_Aligned`). The top-up, the suite's counts and the rows
are made from those arrays; ids are gathered once, into the written columns. (Before, the chunk
path joined, sorted and grouped ids in Polars: ~2 s of the stage's 5.2 s on ``large``, besides
the kernel's 1.7 s; ``bench/README.md``.)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import scipy.sparse as sp
from tqdm import tqdm

from features.contracts import RECOMMENDATION_SOURCES, RECOMMENDATIONS, C, conform
from models.base import Ranks, TrainingData, positions, remap_columns
from models.baselines import PopularityParams, PopularityRecommender, SegmentPopularity
from models.ease import EASEParams, EASERecommender
from models.policy import SEGMENTS
from models.rules import ItemRules, ListRules, item_rules
from models.scoring import KernelRules, fill_lists
from pipelines.stores import Stores, cluster, warehouse
from pipelines.stores.scored import ScoredWriter, scored_at
from pipelines.stores.tracking import Tracking, load_champion, load_version
from pipelines.suites.recommendations import coded_aggregates, validate_recommendations
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
    n_seen = interactions.height  # the first rows of ``excluded``: a warm user's events
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
    # The chunks need only the pairs, as codes: the rest of the interactions and the positives'
    # copy go before the chunks' buffers are allocated.
    del data, interactions
    users = users.sort(C.user_id)
    catalog = _Catalog.of(items[C.item_id], available)
    # users x catalog items, non-zero on a pair never to recommend (seen or blocked): each chunk
    # takes its rows, each candidate its columns in its own item order.
    pairs, warm = _coded_pairs(excluded, n_seen, users[C.user_id], catalog.item_ids)
    users = users.with_columns(_warm=pl.Series(warm))
    del excluded
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
            bundle = _Bundle(
                _aligned_groups(serving, catalog, resolved),
                _Aligned.of(fallback, (), catalog, None), k, catalog, threads, constants,
            )  # fmt: skip
            # What every chunk reads goes to each worker once; chunks go as they are cut.
            shared = cluster.broadcast(client, bundle)
            starts = range(0, users.height, chunk_users)
            chunks = (
                (users.slice(start, chunk_users), pairs[start : start + chunk_users])
                for start in starts
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
                coded_aggregates(
                    pl.Series(C.user_id, [], pl.String), np.zeros((0, k), np.int64),
                    np.zeros((0, k)), np.zeros((0, k), np.int64), k=k, excluded=pairs,
                    available=catalog.available,
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
class _Catalog:
    """The stage's items: every list is held as positions in ``item_ids`` until it is written."""

    item_ids: pl.Series
    available: np.ndarray  # per item: may be recommended at all (available, not excluded)
    names: pa.Array  # item_ids as the written column

    @classmethod
    def of(cls, item_ids: pl.Series, available: pl.Series) -> _Catalog:
        mask = item_ids.is_in(available.implode()).to_numpy()
        return cls(item_ids, mask, pa.array(item_ids.to_list(), pa.string()))


@dataclass(frozen=True)
class _Aligned:
    """One candidate's lists with the stage's catalog put in its item order, once per run."""

    lists: Ranks
    warm: tuple[bool, ...]  # the segments it serves: True for warm users, False for cold ones
    stage_item: np.ndarray  # each of its items' position in the catalog (-1: not there)
    own_item: np.ndarray  # each catalog item's position among its items (-1: not there)
    allowed: np.ndarray
    rules: KernelRules | None

    @classmethod
    def of(
        cls, lists: Ranks, warm: tuple[bool, ...], catalog: _Catalog, rules: ItemRules | None
    ) -> _Aligned:
        stage_item = positions(lists.item_ids, catalog.item_ids)
        allowed = (stage_item >= 0) & catalog.available[np.maximum(stage_item, 0)]
        return cls(
            lists, warm, stage_item, positions(catalog.item_ids, lists.item_ids), allowed,
            None if rules is None else rules.aligned(lists.item_ids),
        )  # fmt: skip

    def rank(
        self, users: pl.DataFrame, pairs: sp.csr_matrix, k: int, num_threads: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(described, items, scores, source)``: per user whether it ranked them, their
        lists as catalog positions and scores (users x at most k), and a source code per
        user (:data:`SOURCES`)."""
        ranked = self.lists.rank(
            users, k, exclude=remap_columns(pairs, self.own_item, self.stage_item.size),
            allowed=self.allowed, rules=self.rules, num_threads=num_threads,
        )  # fmt: skip
        items = np.where(ranked.items >= 0, self.stage_item[np.maximum(ranked.items, 0)], -1)
        codes = np.array([SOURCES.index(name) for name in ranked.sources], np.int8)
        described = (
            np.ones(users.height, np.bool_) if ranked.described is None else ranked.described
        )
        return described, items, ranked.scores, codes[ranked.source]


@dataclass(frozen=True)
class _Bundle:
    """What every chunk of a score run reads (broadcast once per worker on a cluster)."""

    serving: list[_Aligned]
    fallback: _Aligned
    k: int
    catalog: _Catalog
    num_threads: int
    constants: dict[str, object]
    _repeated: list[dict[str, pa.Array]] = field(
        default_factory=lambda: [{}], compare=False, repr=False
    )  # one slot: a full dict is swapped in, never changed after (chunks may run on threads)

    def constant_columns(self, rows: int) -> dict[str, pa.Array]:
        """The run's constant columns, ``rows`` long: slices of arrays built once for the
        longest chunk so far (built per chunk, they took ~20 ms of each chunk's rows)."""
        built = self._repeated[0]
        if not built or any(len(column) < rows for column in built.values()):
            built = {
                name: pa.repeat(
                    pa.scalar(self.constants[name], RECOMMENDATIONS.field(name).type), rows
                )
                for name in ("model_version", C.run_id, "generated_at", "expires_at")
            }
            self._repeated[0] = built
        return {name: column.slice(0, rows) for name, column in built.items()}


SOURCES = tuple(RECOMMENDATION_SOURCES)
"""The rows' sources; a list's source codes index it."""
_SOURCE_NAMES = pa.array([*SOURCES, ""], pa.string())  # "": no source (the suite refuses it)


def _score_chunk(
    bundle: _Bundle, work: tuple[pl.DataFrame, sp.csr_matrix]
) -> tuple[pa.Table, pl.DataFrame, pl.DataFrame, dict[str, float]]:
    """One shard of the score stage: a chunk of users (and the rows of the pairs they must not
    get) to their rows with the run's constants, the suite's per-user counts, rows per source
    and where the time went."""
    chunk, pairs = work
    tick = time.perf_counter()
    items, scores, source = _chunk_lists(chunk, pairs, bundle)
    spent = {"lists": time.perf_counter() - tick}
    tick = time.perf_counter()
    counts = coded_aggregates(
        chunk[C.user_id], items, scores, source, k=bundle.k, excluded=pairs,
        available=bundle.catalog.available,
    )  # fmt: skip
    filled = items >= 0
    per_source = np.bincount(source[filled & (source >= 0)], minlength=len(SOURCES))
    sources = pl.DataFrame({C.source: SOURCES, "n": per_source.astype(np.uint32)}).filter(
        pl.col("n") > 0
    )
    spent["checks"] = time.perf_counter() - tick
    tick = time.perf_counter()
    table = _rows(chunk[C.user_id], items, scores, source, bundle)
    spent["rows"] = time.perf_counter() - tick
    return table, counts, sources, spent


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


def _coded_pairs(
    excluded: pl.DataFrame, n_seen: int, user_ids: pl.Series, item_ids: pl.Series
) -> tuple[sp.csr_matrix, np.ndarray]:
    """The ``excluded`` pairs as a users x items matrix (non-zero: never recommended; pairs of
    unknown users or items dropped), and per user whether they are warm: one of the first
    ``n_seen`` pairs (their interactions) is theirs, whatever its item. Both from one join on
    the user ids: a distinct over the interactions' user ids for the warm flag took ~0.2 s on
    ``large`` on its own."""
    users = pl.DataFrame({C.user_id: user_ids}).with_row_index("u")
    items = pl.DataFrame({C.item_id: item_ids}).with_row_index("i")
    coded = excluded.select(C.user_id, C.item_id).with_row_index("_pair")
    coded = coded.join(users, on=C.user_id, how="inner")
    warm = np.zeros(user_ids.len(), np.bool_)
    warm[coded["u"].to_numpy()[coded["_pair"].to_numpy() < n_seen]] = True
    coded = coded.join(items, on=C.item_id, how="inner")
    u, i = coded["u"].to_numpy(), coded["i"].to_numpy()
    shape = (user_ids.len(), item_ids.len())
    matrix = sp.csr_matrix((np.ones(u.size, np.int8), (u, i)), shape=shape)
    matrix.sum_duplicates()
    return matrix, warm


def _serving_lists(
    plan: dict[str, str],
    model: Ranks | None,
    data: TrainingData,
    popularity: PopularityParams,
    ease: EASEParams,
) -> dict[str, Ranks]:
    """Segment -> what serves it, each fitted once for every chunk. ``model`` segments without a
    champion are left out (the popular top-up serves them)."""
    serving: dict[str, Ranks] = {}
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


def _aligned_groups(
    serving: dict[str, Ranks], catalog: _Catalog, rules: ItemRules
) -> list[_Aligned]:
    """Segments served by the same fitted lists (the champion for warm and cold users, say)
    are one group: one pass of the kernel over the chunk's users of both."""
    groups: dict[int, tuple[Ranks, list[bool]]] = {}
    for segment, lists in serving.items():
        groups.setdefault(id(lists), (lists, []))[1].append(segment == "warm")
    return [_Aligned.of(lists, tuple(warm), catalog, rules) for lists, warm in groups.values()]


def _chunk_lists(
    chunk: pl.DataFrame, pairs: sp.csr_matrix, bundle: _Bundle
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One chunk of users' lists as ``(items, scores, source)``, each users x k: catalog
    positions (-1: an empty slot, only at a list's end), float64 scores, source codes."""
    n, k = chunk.height, bundle.k
    items = np.full((n, k), -1, np.int64)
    scores = np.full((n, k), -np.inf)
    source = np.full((n, k), -1, np.int8)
    warm = chunk["_warm"].to_numpy()
    for group in bundle.serving:
        rows = np.flatnonzero(np.isin(warm, group.warm))
        if rows.size == 0:
            continue
        described, got, got_scores, got_source = group.rank(
            chunk[rows], pairs[rows], k, bundle.num_threads
        )
        # Users it does not describe keep an empty list: the popular top-up serves them.
        rows, got, got_scores, got_source = (
            rows[described], got[described], got_scores[described], got_source[described]
        )  # fmt: skip
        width = got.shape[1]
        items[rows, :width] = got
        scores[rows, :width] = got_scores
        source[rows, :width] = np.where(got >= 0, got_source[:, None], -1)
    # Only the users whose list is short (not described, too few items under the rules) are
    # topped up from the popular list: no second scoring pass over everyone.
    short = np.flatnonzero(items[:, k - 1] < 0) if k else np.zeros(0, np.int64)
    if short.size:
        _, extra, extra_scores, extra_source = bundle.fallback.rank(
            chunk[short], pairs[short], k, bundle.num_threads
        )
        fill_lists(items, scores, source, short, extra, extra_scores, extra_source)
    return items, scores, source


def _rows(
    user_ids: pl.Series,
    items: np.ndarray,
    scores: np.ndarray,
    source: np.ndarray,
    bundle: _Bundle,
) -> pa.Table:
    """A chunk's lists as rows of the ``RECOMMENDATIONS`` contract, with the run's constant
    columns: one per filled slot, its rank the slot's."""
    n, k = items.shape
    filled = (items >= 0).reshape(-1)
    every = bool(filled.all())  # the usual case: no mask to apply (views, not copies)
    user = np.repeat(np.arange(n), k)
    rank = np.tile(np.arange(1, k + 1, dtype=np.int32), n)
    picked, score, codes = items.reshape(-1), scores.reshape(-1), source.reshape(-1)
    if not every:
        user, rank, picked, score, codes = (a[filled] for a in (user, rank, picked, score, codes))
    columns: dict[str, pa.Array] = {
        C.user_id: pa.array(user_ids.to_list(), pa.string()).take(user),
        C.rank: pa.array(rank),
        C.item_id: bundle.catalog.names.take(picked),
        C.score: pa.array(score, pa.float64()),
        C.source: _SOURCE_NAMES.take(np.where(codes < 0, len(SOURCES), codes).astype(np.int8)),
    }
    columns.update(bundle.constant_columns(picked.size))
    return conform(pa.table(columns), RECOMMENDATIONS, "scored recommendations")
