"""The events suite: Great Expectations gates each batch of new events; the same rules split
its rows.

Each :class:`RowRule` is defined once and used twice: as a Polars predicate that names the reason
a row is quarantined, and as GX expectations (``mostly = 1 - max_quarantine_share``) that decide
whether the batch as a whole may pass. GX runs in SUMMARY mode on pandas with nanosecond
timestamps (see DESIGN.md: microsecond timestamps make GX ~70x slower).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path

import great_expectations as gx
import pandas as pd
import polars as pl
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from features.contracts import EVENT_TYPES, EVENTS, C
from pipelines.suites.runner import ExpectationOutcome, describe, run_expectations


class ValidationThresholds(BaseModel):
    """How much a batch may deviate before the gate stops it: defined here and nowhere else
    (the settings carry one of these as ``RECS_VALIDATION__<NAME>``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_quarantine_share: float = Field(
        0.01, ge=0, le=1, description="fail above this share of quarantined rows"
    )
    max_unknown_user_share: float = Field(
        0.2, ge=0, le=1, description="fail above this share of events by users not in the catalog"
    )
    max_new_user_share: float = Field(
        0.5, ge=0, le=1, description="... by users never seen in the clean lake"
    )
    max_new_item_share: float = Field(
        0.5, ge=0, le=1, description="... on items never seen in the clean lake"
    )
    min_volume_ratio: float = Field(
        0.5, ge=0, description="a new day needs this share of the trailing 7-day daily volume"
    )
    clock_skew_minutes: int = Field(
        10, ge=0, description="how far past now an event timestamp may be"
    )
    valid_from: datetime = Field(
        datetime(1990, 1, 1, tzinfo=UTC),
        # Not 2000: MovieLens 100K (1997-98), which `recs import movielens` loads, must pass;
        # 1990 still catches the default-value dates (1900, the 1970 epoch).
        description="events before this are quarantined as timestamp_out_of_range",
    )


class ValidationParams(BaseModel):
    """What a batch is checked against: the window, the reference sets, the thresholds."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    window_end: datetime = Field(description="No event may be later than this (UTC)")
    known_items: frozenset[str]
    known_users: frozenset[str] | None = Field(None, description="user catalog (None: unchecked)")
    seen_users: frozenset[str] | None = Field(None, description="users in clean history")
    seen_items: frozenset[str] | None = Field(None, description="items in clean history")
    trailing_daily_volume: float | None = Field(
        None, description="mean events per day over the 7 days before the batch (None: no history)"
    )
    event_types: tuple[str, ...] = EVENT_TYPES
    rating_range: tuple[float, float] = (1.0, 5.0)
    thresholds: ValidationThresholds = ValidationThresholds()


def _blank(column: str) -> pl.Expr:
    # Extraction turns blank ids into nulls; the strip keeps the rule right for any input.
    return pl.col(column).is_null() | (pl.col(column).str.strip_chars() == "")


Mostly = Callable[[str], float]
"""``mostly`` for an expectation on a column: GX counts a column map expectation over the
column's non-null values, the row split over all rows; see :func:`events_suite`."""


@dataclass(frozen=True)
class RowRule:
    """One reason a row is quarantined: its Polars predicate and its GX expectations."""

    reason: str
    violated: Callable[[ValidationParams], pl.Expr]
    expectations: Callable[[ValidationParams, Mostly], list[gx.expectations.Expectation]]


def _not_blank(
    column: str,
) -> Callable[[ValidationParams, Mostly], list[gx.expectations.Expectation]]:
    # Extraction trims ids and turns blank ones into nulls, so not-null is the whole check in
    # GX; a regex expectation over millions of ids would cost seconds for nothing.
    def build(_: ValidationParams, mostly: Mostly) -> list[gx.expectations.Expectation]:
        return [gx.expectations.ExpectColumnValuesToNotBeNull(column=column, mostly=mostly(""))]

    return build


DUPLICATE = "duplicate_event_id"

ROW_RULES: tuple[RowRule, ...] = (
    RowRule("missing_user_id", lambda p: _blank(C.user_id), _not_blank(C.user_id)),
    RowRule("missing_item_id", lambda p: _blank(C.item_id), _not_blank(C.item_id)),
    RowRule(
        "unknown_event_type",
        lambda p: ~pl.col(C.event_type).is_in(list(p.event_types)).fill_null(False),
        lambda p, mostly: [
            gx.expectations.ExpectColumnValuesToNotBeNull(column=C.event_type, mostly=mostly("")),
            gx.expectations.ExpectColumnValuesToBeInSet(
                column=C.event_type, value_set=list(p.event_types), mostly=mostly(C.event_type)
            ),
        ],
    ),
    RowRule(
        "future_timestamp",
        lambda p: pl.col(C.event_ts) > p.window_end,
        lambda p, mostly: [
            gx.expectations.ExpectColumnValuesToBeBetween(
                column=C.event_ts, max_value=pd.Timestamp(p.window_end), mostly=mostly(C.event_ts)
            )
        ],
    ),
    RowRule(
        "timestamp_out_of_range",
        lambda p: pl.col(C.event_ts) < p.thresholds.valid_from,
        lambda p, mostly: [
            gx.expectations.ExpectColumnValuesToBeBetween(
                column=C.event_ts,
                min_value=pd.Timestamp(p.thresholds.valid_from),
                mostly=mostly(C.event_ts),
            )
        ],
    ),
    RowRule(
        "negative_value",
        lambda p: (pl.col(C.value) < 0).fill_null(False),
        lambda p, mostly: [
            gx.expectations.ExpectColumnValuesToBeBetween(
                column=C.value, min_value=0, mostly=mostly(C.value)
            )
        ],
    ),
    RowRule(
        "rating_out_of_range",
        lambda p: (
            (pl.col(C.event_type) == "rating")
            & (pl.col(C.value).is_null() | ~pl.col(C.value).is_between(*p.rating_range))
        ),
        lambda p, mostly: [
            gx.expectations.ExpectColumnValuesToNotBeNull(
                column=C.value,
                row_condition='event_type=="rating"',
                condition_parser="pandas",
                mostly=mostly("rating"),
            ),
            gx.expectations.ExpectColumnValuesToBeBetween(
                column=C.value,
                min_value=p.rating_range[0],
                max_value=p.rating_range[1],
                row_condition='event_type=="rating"',
                condition_parser="pandas",
                mostly=mostly("rating_value"),
            ),
        ],
    ),
    RowRule(
        "unknown_item",
        lambda p: ~pl.col(ITEM_IN_CATALOG),
        lambda p, mostly: [
            gx.expectations.ExpectColumnValuesToBeInSet(
                column=ITEM_IN_CATALOG, value_set=[True], mostly=mostly("")
            )
        ],
    ),
    RowRule(
        DUPLICATE,
        # The first occurrence in ingestion order is kept; later copies are quarantined.
        lambda p: pl.col(C.event_id).is_first_distinct().not_(),
        lambda p, mostly: [
            gx.expectations.ExpectColumnValuesToBeUnique(
                column=C.event_id, mostly=mostly(C.event_id)
            )
        ],
    ),
)


def events_suite(
    params: ValidationParams, non_null_share: Mapping[str, float] | None = None
) -> gx.ExpectationSuite:
    """The GX suite for a batch of new events: schema, non-empty, and every row rule.

    Every row rule may break on at most ``max_quarantine_share`` of the batch's rows. GX measures
    a column expectation's ``mostly`` over the column's non-null values, so the threshold is
    rescaled by the column's non-null share (``non_null_share``; 1 when not given): a rule on the
    mostly-null ``value`` column then fails at the same number of rows as the row split.
    """
    shares = non_null_share or {}

    def mostly(column: str) -> float:
        present = shares.get(column, 1.0) if column else 1.0
        if present <= 0:
            return 0.0
        return max(0.0, 1.0 - params.thresholds.max_quarantine_share / present)

    suite = gx.ExpectationSuite(name="new_events")
    flags = [flag for flag, _, _ in _reference_sets(params)]
    suite.add_expectation(
        gx.expectations.ExpectTableColumnsToMatchSet(column_set=[*EVENTS.names, *flags])
    )
    suite.add_expectation(gx.expectations.ExpectTableRowCountToBeBetween(min_value=1))
    for rule in ROW_RULES:
        for expectation in rule.expectations(params, mostly):
            suite.add_expectation(expectation)
    # Batch-level shares: they stop a run but quarantine nothing (such events are valid).
    batch_level = (
        (USER_IN_CATALOG, params.known_users, params.thresholds.max_unknown_user_share),
        (USER_SEEN_BEFORE, params.seen_users, params.thresholds.max_new_user_share),
        (ITEM_SEEN_BEFORE, params.seen_items, params.thresholds.max_new_item_share),
    )
    for flag, known, max_share in batch_level:
        if known is not None:
            suite.add_expectation(
                gx.expectations.ExpectColumnValuesToBeInSet(
                    column=flag, value_set=[True], mostly=1.0 - max_share
                )
            )
    return suite


# Membership in large reference sets (catalogs, history) is computed once per batch by a Polars
# join into these boolean columns, which the row rules and GX then both read. Handing GX the sets
# themselves (value_set of 50k ids) costs ~15 s per 6M-row validation in its config handling.
ITEM_IN_CATALOG = "_item_in_catalog"
USER_IN_CATALOG = "_user_in_catalog"
USER_SEEN_BEFORE = "_user_seen_before"
ITEM_SEEN_BEFORE = "_item_seen_before"


def _reference_sets(params: ValidationParams) -> list[tuple[str, str, frozenset[str]]]:
    """(flag column, id column, reference set) for each set ``params`` carries."""
    sets = (
        (ITEM_IN_CATALOG, C.item_id, params.known_items),
        (USER_IN_CATALOG, C.user_id, params.known_users),
        (USER_SEEN_BEFORE, C.user_id, params.seen_users),
        (ITEM_SEEN_BEFORE, C.item_id, params.seen_items),
    )
    return [(flag, column, values) for flag, column, values in sets if values is not None]


def membership_flags(frame: pl.DataFrame, params: ValidationParams) -> pl.DataFrame:
    """The batch with one boolean membership column per reference set. A null id counts as a
    member: its own rule (not-null) reports it."""
    return frame.with_columns(
        pl.col(column).is_in(pl.Series(sorted(values), dtype=pl.String).implode()).fill_null(True)
        .alias(flag)
        for flag, column, values in _reference_sets(params)
        if column in frame.columns
    )  # fmt: skip


def daily_volume_suite(params: ValidationParams) -> gx.ExpectationSuite:
    """On one row per new event date of the batch (``n_events``): each day holds at least
    ``min_volume_ratio`` of the trailing daily volume."""
    assert params.trailing_daily_volume is not None
    suite = gx.ExpectationSuite(name="daily_volume")
    suite.add_expectation(
        gx.expectations.ExpectColumnValuesToBeBetween(
            column="n_events",
            min_value=params.thresholds.min_volume_ratio * params.trailing_daily_volume,
        )
    )
    return suite


def day_counts(rows: pl.DataFrame) -> pl.DataFrame:
    """Events per date of ``rows`` (``day``, ``n_events``): what the volume check reads, and
    what shards add up."""
    return rows.group_by(pl.col(C.event_ts).dt.date().alias("day")).agg(pl.len().alias("n_events"))


def new_day_volumes(
    days: pl.DataFrame, history_dates: frozenset[date], complete_before: datetime | None = None
) -> pl.DataFrame:
    """The dates of ``days`` (:func:`day_counts` of the batch's rows that pass the row rules)
    not already in the clean history, with their event counts. Dates already in history only
    receive late events, which say nothing about volume; a date not over by
    ``complete_before`` (today, at 02:00) is still filling up. Rows a row rule quarantines (a
    defect dated 2199) never make a day."""
    days = days.filter(~pl.col("day").is_in(sorted(history_dates)))
    if complete_before is not None:
        days = days.filter(pl.col("day") < complete_before.date())
    return days.sort("day")


@dataclass(frozen=True)
class ValidationResult:
    """The gate's verdict and the row split of one batch."""

    clean: pl.DataFrame
    quarantined: pl.DataFrame  # the batch's columns plus `reason`
    outcomes: list[ExpectationOutcome]
    quarantine_share: float
    max_quarantine_share: float
    failures: list[str] = field(default_factory=list)

    @property
    def success(self) -> bool:
        return not self.failures

    def counts_by_reason(self) -> dict[str, int]:
        rows = self.quarantined.group_by(C.reason).len().sort(C.reason).iter_rows()
        return {str(reason): int(n) for reason, n in rows}


def _with_ids(outcome: ExpectationOutcome, frame: pl.DataFrame) -> ExpectationOutcome:
    """A failed outcome on a ranked column (:data:`RANKED_FOR_GX`, only checked for
    duplicates) quoting the duplicated ids themselves (GX saw their ranks)."""
    if outcome.success or outcome.column not in RANKED_FOR_GX or not outcome.examples:
        return outcome
    column = frame[outcome.column]
    repeated = column.filter(column.is_duplicated()).unique(maintain_order=True)
    return replace(outcome, examples=repeated.head(len(outcome.examples)).to_list())


def split_rows(
    batch: pl.DataFrame, params: ValidationParams, seen_ids: frozenset[str] = frozenset()
) -> pl.DataFrame:
    """Add a ``reason`` column: the first rule a row breaks, or null for a clean row.
    ``seen_ids`` are event ids whose first copy is in an earlier part of the batch (another
    file, validated apart): their copies here are duplicates too."""
    reason: pl.Expr = pl.lit(None, dtype=pl.String)
    for rule in reversed(ROW_RULES):
        reason = pl.when(rule.violated(params)).then(pl.lit(rule.reason)).otherwise(reason)
    if seen_ids:  # the duplicate rule comes last: only rows no other rule took
        later_copy = pl.col(C.event_id).is_in(sorted(seen_ids))
        reason = pl.when(later_copy).then(reason.fill_null(DUPLICATE)).otherwise(reason)
    return batch.with_columns(reason.alias(C.reason))


CATEGORICAL_FOR_GX = (C.user_id, C.item_id, C.event_type, C.source)
"""Columns GX only null-checks or compares with a small set: handed over as categoricals (codes
and a dictionary), a fraction of the memory of millions of strings, same verdicts."""


RANKED_FOR_GX = (C.event_id,)
"""Columns GX only checks for nulls and duplicates: handed over as their dense rank (equal ids,
equal numbers; a null stays null), so the verdict and the counts are the same. Finding the
duplicates among 6.4M id strings took pandas ~1.1 GB of scratch, the validation's peak on
``large``; among integers it takes a fraction. The examples a failure quotes are mapped back
to the ids (:func:`validate_events`)."""


def _for_gx(column: pl.Series) -> pl.Series:
    if column.name in CATEGORICAL_FOR_GX:
        return column.cast(pl.Categorical)
    if column.name in RANKED_FOR_GX:
        return column.rank("dense")
    return column


def to_gx_frame(batch: pl.DataFrame) -> pd.DataFrame:
    """Pandas copy for GX: timestamps as datetime64[ns, UTC], low-information string columns as
    categoricals (:data:`CATEGORICAL_FOR_GX`), ids only checked for duplicates as their dense
    rank (:data:`RANKED_FOR_GX`)."""
    # Column by column: no second copy of the whole batch on the way.
    frame = pd.DataFrame(
        {name: _for_gx(batch[name]).to_pandas() for name in batch.columns}, copy=False
    )
    for column in (C.event_ts, C.ingested_at):
        if column in frame:
            frame[column] = frame[column].astype("datetime64[ns, UTC]")
    return frame


def present_counts(frame: pl.DataFrame) -> dict[str, int]:
    """Per column its null count (``null:<column>``), and the rating rows with and without a
    value: what :func:`shares` needs, additive across shards of a batch."""
    counts = {f"null:{c}": frame[c].null_count() for c in frame.columns}
    if C.event_type in frame.columns and C.value in frame.columns:
        rating = frame[C.event_type] == "rating"
        counts["rating"] = int(rating.sum())
        counts["rating_value"] = int((rating & frame[C.value].is_not_null()).sum())
    return counts


def shares(height: int, counts: Mapping[str, int]) -> dict[str, float]:
    """Share of rows each expectation's ``mostly`` applies to (see :func:`events_suite`), from
    a batch's height and :func:`present_counts`."""
    if not height:
        return {}
    out = {
        key.removeprefix("null:"): 1.0 - n / height
        for key, n in counts.items()
        if key.startswith("null:")
    }
    for key in ("rating", "rating_value"):
        if key in counts:
            out[key] = float(counts[key]) / height
    return out


def validate_events(
    batch: pa.Table | pl.DataFrame,
    params: ValidationParams,
    passthrough: Sequence[str] = (),
    history_dates: frozenset[date] | None = None,
    gx_root: Path | None = None,
) -> ValidationResult:
    """Gate a batch of new events with GX and split it into clean and quarantined rows.

    Clean + quarantined always equals the batch. ``passthrough`` columns (bookkeeping such as the
    lake part a row came from) are carried into both outputs but not shown to GX. The result
    fails (``success`` is False, with ``failures`` naming each cause) when a table-level
    expectation fails, a row rule exceeds its ``mostly``, or the quarantined share exceeds
    ``max_quarantine_share``.

    ``history_dates`` are the event dates already in the clean lake; with
    ``params.trailing_daily_volume`` they enable the daily volume check on the batch's new dates.
    """
    frame = batch if isinstance(batch, pl.DataFrame) else pl.from_arrow(batch)
    assert isinstance(frame, pl.DataFrame)
    flagged = membership_flags(frame, params)
    flags = [c for c in flagged.columns if c not in frame.columns]
    shown = flagged.drop(passthrough)
    outcomes = run_expectations(
        to_gx_frame(shown),
        lambda: events_suite(params, shares(shown.height, present_counts(shown))),
        gx_root,
    )
    schema_ok = set(EVENTS.names) <= set(frame.columns)
    if schema_ok:
        labelled = split_rows(flagged, params).drop(flags)
        quarantined = labelled.filter(pl.col(C.reason).is_not_null())
        clean = labelled.filter(pl.col(C.reason).is_null()).drop(C.reason)
    else:
        # A schema change quarantines nothing row by row: the whole batch is refused.
        quarantined = frame.with_columns(pl.lit("schema_mismatch").alias(C.reason))
        clean = frame.clear()
    outcomes = [_with_ids(o, frame) for o in outcomes]
    outcomes, failures, share = gate(
        outcomes,
        params,
        rows=frame.height,
        quarantined=quarantined.height,
        clean_days=day_counts(clean) if schema_ok else None,
        history_dates=history_dates,
        gx_root=gx_root,
    )
    return ValidationResult(
        clean=clean,
        quarantined=quarantined,
        outcomes=outcomes,
        quarantine_share=share,
        max_quarantine_share=params.thresholds.max_quarantine_share,
        failures=failures,
    )


def gate(
    outcomes: list[ExpectationOutcome],
    params: ValidationParams,
    *,
    rows: int,
    quarantined: int,
    clean_days: pl.DataFrame | None,
    history_dates: frozenset[date] | None,
    gx_root: Path | None,
) -> tuple[list[ExpectationOutcome], list[str], float]:
    """The batch's verdict from the suite's outcomes: the failures (each failed expectation,
    a short day by the daily volume suite, a quarantined share over the threshold), with the
    volume outcomes added, and the quarantined share."""
    failures = [describe(o) for o in outcomes if not o.success]
    volume = params.trailing_daily_volume
    if volume and history_dates is not None and clean_days is not None:
        days = new_day_volumes(clean_days, history_dates, complete_before=params.window_end)
        if days.height:
            checked = run_expectations(
                days.to_pandas(), lambda: daily_volume_suite(params), gx_root
            )
            outcomes = outcomes + checked
            failures += [describe(o) for o in checked if not o.success]
            if not all(o.success for o in checked):
                floor = params.thresholds.min_volume_ratio * volume
                failures += [
                    f"day {day} has {n} valid events, fewer than min_volume_ratio "
                    f"{params.thresholds.min_volume_ratio} x the trailing daily volume "
                    f"{volume:.0f} ({floor:.0f}): a partial export? (check daily_volume)"
                    for day, n in days.filter(pl.col("n_events") < floor).iter_rows()
                ]
    share = quarantined / rows if rows else 0.0
    if share > params.thresholds.max_quarantine_share:
        failures.append(
            f"quarantined share {share:.2%} exceeds max_quarantine_share "
            f"{params.thresholds.max_quarantine_share:.2%} "
            f"({quarantined} of {rows} rows)"
        )
    return outcomes, failures, share
