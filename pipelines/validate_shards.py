"""Validation on a Dask cluster: one shard per run of raw partition files, one verdict per
batch.

A shard is a run of consecutive files holding at least ``shard_rows`` rows (GX spends
~0.17 s on a validation however small the batch, ``bench/scale.py``: a shard per small file
would be mostly that). Each shard reads its files, runs the events suite on them with GX, splits
their rows by the row rules and stages each file's clean rows under the run's id
(:func:`validate_shard`). The stage then adds up what GX counted in every shard (unexpected,
element and missing rows per expectation) and judges the sums with the batch's ``mostly``, by
GX's own rule (``(considered - unexpected) / considered >= mostly``, vacuously true on no
rows): the verdict is the one GX gives the whole batch in one piece (:func:`add_up`).

Two things cross shards:

- a duplicate event id whose first copy is in an earlier shard: every shard's ids are hashed,
  the hashes seen in two shards are looked up as ids (:func:`ids_among`; a hash collision is
  not a duplicate), and a shard holding later copies is split again with those ids;
- the volume of a day: the files' clean day counts add up before the daily volume check.

The stage commits in file order, so the clean files and the quarantine are the single-machine
ones (``tests/unit/test_cluster.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import great_expectations as gx
import polars as pl
import pyarrow.parquet as pq

from features.contracts import EVENTS, C
from pipelines.stores import cluster, lake
from pipelines.suites.events import (
    ValidationParams,
    day_counts,
    events_suite,
    membership_flags,
    present_counts,
    shares,
    split_rows,
    to_gx_frame,
)
from pipelines.suites.runner import ExpectationOutcome, run_expectations

UNIT = "_unit"
EXAMPLES = 20
"""Examples a failed expectation quotes: GX's ``partial_unexpected_count`` in SUMMARY mode."""
HASH_SEED = 0
SHARD_ROWS = 1_000_000
"""Rows a validation shard holds at least (whole files; the last shard may hold fewer)."""


@dataclass(frozen=True)
class _Shared:
    """What every shard reads (broadcast once per worker)."""

    lake: Path
    run_id: str
    params: ValidationParams


@dataclass(frozen=True)
class ShardVerdict:
    """One shard's part of a batch's validation; its clean rows are staged, not yet in place."""

    units: list[str]
    rows: int
    present: dict[str, int]
    outcomes: list[ExpectationOutcome]
    quarantined: pl.DataFrame
    clean_rows: int
    clean_days: pl.DataFrame
    id_hashes: pl.Series
    repeated: pl.DataFrame  # ids repeated inside the shard: event_id, pos (first row), first 20
    staged: list[lake.StagedUnit]


def shards_of(lake_root: Path, units: list[str], shard_rows: int = SHARD_ROWS) -> list[list[str]]:
    """``units`` in order, cut into runs of at least ``shard_rows`` rows (Parquet metadata)."""
    shards: list[list[str]] = [[]]
    rows = 0
    for unit in units:
        if shards[-1] and rows >= shard_rows:
            shards.append([])
            rows = 0
        shards[-1].append(unit)
        rows += pq.ParquetFile(lake.unit_path(lake_root, "raw", unit)).metadata.num_rows
    return [s for s in shards if s]


def slices_by(frame: pl.DataFrame, column: str) -> dict[str, pl.DataFrame]:
    """Rows per value of ``column`` as zero-copy slices: the rows of one file are contiguous
    (read in file order, filtered in order), which ``partition_by`` would copy for nothing."""
    out: dict[str, pl.DataFrame] = {}
    offset = 0
    for length, value in frame[column].rle().struct.unnest().iter_rows():
        part = frame.slice(offset, length)
        out[value] = pl.concat([out[value], part]) if value in out else part
        offset += length
    return out


def stage_clean(
    lake_root: Path, units: list[str], clean: pl.DataFrame, run_id: str
) -> list[lake.StagedUnit]:
    """Each file's clean rows (``clean`` carries :data:`UNIT`) staged under ``run_id``; a file
    with none gets an empty file (it was validated)."""
    by_file = slices_by(clean, UNIT)
    staged = []
    for unit in units:
        rows = by_file.get(str(lake.unit_path(lake_root, "raw", unit)))
        table = rows.drop(UNIT).to_arrow() if rows is not None else EVENTS.empty_table()
        staged.append(lake.stage_unit(lake_root, "clean", unit, table, run_id=run_id))
    return staged


def validate_shard(shared: _Shared, work: tuple[list[str], frozenset[str]]) -> ShardVerdict:
    """Validate one shard's raw files; ``work`` is (units, ids whose first copy is in an
    earlier shard of the batch: their copies here are quarantined as duplicates)."""
    units, earlier = work
    params = shared.params
    frame = lake.read_units(shared.lake, "raw", units, unit_column=UNIT)
    flagged = membership_flags(frame, params)
    flags = [c for c in flagged.columns if c not in frame.columns]
    shown = flagged.drop(UNIT)
    present = present_counts(shown)
    outcomes = run_expectations(
        to_gx_frame(shown), lambda: events_suite(params, shares(shown.height, present))
    )
    labelled = split_rows(flagged, params, seen_ids=earlier).drop(flags)
    quarantined = labelled.filter(pl.col(C.reason).is_not_null())
    clean = labelled.filter(pl.col(C.reason).is_null()).drop(C.reason)
    staged = stage_clean(shared.lake, units, clean, shared.run_id)
    repeated = (
        frame.select(C.event_id)
        .with_row_index("pos")
        .filter(pl.col(C.event_id).is_duplicated())
        .unique(C.event_id, keep="first", maintain_order=True)
        .head(EXAMPLES)
    )
    return ShardVerdict(
        units=units,
        rows=frame.height,
        present=present,
        outcomes=outcomes,
        quarantined=quarantined,
        clean_rows=clean.height,
        clean_days=day_counts(clean),
        id_hashes=frame[C.event_id].hash(HASH_SEED).unique(),
        repeated=repeated,
        staged=staged,
    )


def ids_among(shared: _Shared, work: tuple[list[str], pl.Series]) -> pl.DataFrame:
    """The event ids of one shard's raw files whose hash is in ``work[1]``: event_id, count,
    pos (first row in the shard)."""
    units, hashes = work
    files = [str(lake.unit_path(shared.lake, "raw", u)) for u in units]
    ids = pl.read_parquet(files, columns=[C.event_id], hive_partitioning=False)
    return (
        ids.with_row_index("pos")
        .filter(pl.col(C.event_id).hash(HASH_SEED).is_in(hashes.implode()))
        .group_by(C.event_id, maintain_order=True)
        .agg(pl.len().alias("count"), pl.col("pos").first())
    )


@dataclass(frozen=True)
class ShardedVerdict:
    """A batch's validation added up over its shards, in file order."""

    shards: list[ShardVerdict]
    outcomes: list[ExpectationOutcome]
    rows: int
    quarantined: pl.DataFrame
    clean_days: pl.DataFrame
    shares: dict[str, float]  # the batch's, which its suite's ``mostly`` values rest on

    @property
    def clean_rows(self) -> int:
        return sum(s.clean_rows for s in self.shards)

    @property
    def staged(self) -> list[lake.StagedUnit]:
        return [step for s in self.shards for step in s.staged]


def validate_units(
    client: Any,
    lake_root: Path,
    units: list[str],
    params: ValidationParams,
    run_id: str,
    shard_rows: int = SHARD_ROWS,
) -> ShardedVerdict:
    """Validate ``units`` in shards of at least ``shard_rows`` rows on the cluster ``client``
    reaches (None: in process), and add their verdicts up. The caller commits or aborts every
    file's staged clean rows (:attr:`ShardedVerdict.staged`)."""
    shared = cluster.broadcast(client, _Shared(lake_root, run_id, params))
    shards = shards_of(lake_root, units, shard_rows)
    verdicts = list(
        cluster.map_in_order(
            client, validate_shard, shared, [(s, frozenset[str]()) for s in shards]
        )
    )
    cross = _cross_shard_ids(client, shared, verdicts)
    if cross.height:
        first = cross.group_by(C.event_id).agg(pl.col("shard").min().alias("first"))
        later = cross.join(first, on=C.event_id).filter(pl.col("shard") > pl.col("first"))
        again = {
            int(index): frozenset(ids)
            for index, ids in later.group_by("shard").agg(pl.col(C.event_id)).iter_rows()
        }
        order = sorted(again)
        work = [(shards[i], again[i]) for i in order]
        redone = cluster.map_in_order(client, validate_shard, shared, work)
        for i, verdict in zip(order, redone, strict=True):
            verdicts[i] = verdict
    rows = sum(v.rows for v in verdicts)
    present: dict[str, int] = {}
    for v in verdicts:
        for key, n in v.present.items():
            present[key] = present.get(key, 0) + n
    batch_shares = shares(rows, present)
    gx.get_context(mode="ephemeral")  # GX builds expectations only inside a context
    suite = events_suite(params, batch_shares)
    outcomes = []
    for i, expectation in enumerate(suite.expectations):
        outcome = add_up(expectation, [v.outcomes[i] for v in verdicts])
        if outcome.expectation == "expect_column_values_to_be_unique":
            outcome = _uniqueness_across(outcome, _mostly(expectation), verdicts, cross)
        outcomes.append(outcome)
    days = pl.concat([v.clean_days for v in verdicts]).group_by("day").agg(pl.sum("n_events"))
    return ShardedVerdict(
        shards=verdicts,
        outcomes=outcomes,
        rows=rows,
        quarantined=pl.concat([v.quarantined for v in verdicts]),
        clean_days=days,
        shares=batch_shares,
    )


def _cross_shard_ids(client: Any, shared: Any, verdicts: list[ShardVerdict]) -> pl.DataFrame:
    """Event ids found in more than one shard: event_id, shard (its index), count, pos."""
    hashes = pl.concat(
        pl.DataFrame(
            {"hash": v.id_hashes, "shard": i}, schema={"hash": pl.UInt64, "shard": pl.Int64}
        )
        for i, v in enumerate(verdicts)
    )
    shared_hashes = hashes.filter(pl.col("hash").is_duplicated())
    empty = pl.DataFrame(
        schema={C.event_id: pl.String, "count": pl.UInt32, "pos": pl.UInt32, "shard": pl.Int64}
    )
    if not shared_hashes.height:
        return empty
    by_shard = shared_hashes.group_by("shard").agg("hash").sort("shard")
    work = [(verdicts[i].units, pl.Series(h, dtype=pl.UInt64)) for i, h in by_shard.iter_rows()]
    found = [
        ids.with_columns(pl.lit(i, pl.Int64).alias("shard"))
        for i, ids in zip(
            by_shard["shard"], cluster.map_in_order(client, ids_among, shared, work), strict=True
        )
    ]
    ids = pl.concat([empty, *found])
    return ids.filter(pl.col("shard").n_unique().over(C.event_id) > 1)


def add_up(expectation: Any, parts: Sequence[ExpectationOutcome]) -> ExpectationOutcome:
    """One expectation's verdict on a whole batch from its verdicts on the batch's files, as GX
    would give it on the batch in one piece (``expectation`` carries the batch's ``mostly``)."""
    kind = expectation.expectation_type
    for part in parts:
        if part.expectation != kind:
            raise ValueError(f"shard outcomes out of order: {part.expectation} is not {kind}")
    first = parts[0]
    errors = [p.error for p in parts if p.error]
    if errors:
        return replace(first, success=False, error=errors[0])
    if all(p.unexpected_count is None for p in parts):  # a table-level expectation
        if kind == "expect_table_row_count_to_be_between":
            observed = sum(int(p.observed) for p in parts)  # type: ignore[call-overload]
            low, high = expectation.min_value, expectation.max_value
            ok = (low is None or observed >= low) and (high is None or observed <= high)
            return replace(first, success=ok, observed=observed)
        if kind == "expect_table_columns_to_match_set":
            return replace(first, success=all(p.success for p in parts))
        raise ValueError(f"{kind}: no rule to add its verdicts up across shards")
    unexpected = sum(p.unexpected_count or 0 for p in parts)
    element = sum(p.element_count or 0 for p in parts)
    missing = (
        None
        if all(p.missing_count is None for p in parts)
        else sum(p.missing_count or 0 for p in parts)
    )
    examples = [e for p in parts for e in p.examples][:EXAMPLES]
    return _judged(first, _mostly(expectation), unexpected, element, missing, examples)


def _judged(
    outcome: ExpectationOutcome,
    mostly: float,
    unexpected: int,
    element: int,
    missing: int | None,
    examples: list[object],
) -> ExpectationOutcome:
    considered = element - missing if missing is not None else element
    # GX's _mostly_success and _format_map_output (great_expectations 1.x), on the sums.
    success = (
        True
        if element == 0 or considered == 0
        else (float(considered) - float(unexpected)) / float(considered) >= mostly
    )
    percent = unexpected / considered * 100 if considered > 0 else None
    return replace(
        outcome,
        success=success,
        unexpected_count=unexpected,
        unexpected_percent=percent,
        element_count=element,
        missing_count=missing,
        examples=examples,
    )


def _uniqueness_across(
    outcome: ExpectationOutcome, mostly: float, verdicts: list[ShardVerdict], cross: pl.DataFrame
) -> ExpectationOutcome:
    """The event id uniqueness verdict with the copies across shards counted (every shard saw
    only its own files), quoting the repeated ids in order of first appearance."""
    if outcome.column != C.event_id:
        raise ValueError(f"uniqueness of {outcome.column}: no rule to add it up across shards")
    assert outcome.unexpected_count is not None
    assert outcome.element_count is not None
    # Rows of a cross-shard id: all of them are unexpected; a shard counted its own only when
    # the id repeats inside it.
    per_id = cross.group_by(C.event_id).agg(
        pl.sum("count").alias("total"),
        pl.col("count").filter(pl.col("count") > 1).sum().alias("counted"),
    )
    extra = int(per_id["total"].sum() or 0) - int(per_id["counted"].sum() or 0)
    unexpected = outcome.unexpected_count + extra
    firsts = pl.concat(
        [
            *(
                v.repeated.with_columns(pl.lit(i, pl.Int64).alias("shard"))
                for i, v in enumerate(verdicts)
            ),
            cross.select(C.event_id, "pos", "shard"),
        ],
        how="diagonal_relaxed",
    )
    order = firsts.sort("shard", "pos").unique(C.event_id, keep="first", maintain_order=True)
    examples = order[C.event_id].head(min(EXAMPLES, unexpected)).to_list()
    return _judged(
        outcome, mostly, unexpected, outcome.element_count, outcome.missing_count, examples
    )


def _mostly(expectation: Any) -> float:
    return float(expectation.mostly)
