"""Validate: Great Expectations gates each batch of new events; the same rules split its rows.

Each :class:`RowRule` is defined once and used twice: as a Polars predicate that names the reason
a row is quarantined, and as GX expectations (``mostly = 1 - max_quarantine_share``) that decide
whether the batch as a whole may pass. GX runs in SUMMARY mode on pandas with nanosecond
timestamps (see DESIGN.md: microsecond timestamps make GX ~70x slower).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import cast

import great_expectations as gx
import great_expectations.execution_engine.pandas_execution_engine as _gx_pandas_engine
import pandas as pd
import polars as pl
import pyarrow as pa
from great_expectations.checkpoint import UpdateDataDocsAction
from great_expectations.data_context.types.base import ProgressBarsConfig
from great_expectations.datasource.fluent import PandasDatasource
from pydantic import BaseModel, ConfigDict, Field

from features.contracts import EVENT_TYPES, EVENTS, RECOMMENDATION_SOURCES, C

# GX logs every metric computation at INFO; the gate reports what matters itself.
logging.getLogger("great_expectations").setLevel(logging.WARNING)

# GX fingerprints every pandas batch below this many bytes by hashing all of it, twice per
# validation: ~10 s of a 30 s run on 6M events, for a batch marker nothing here reads. Skip it
# (GX 1.24, pinned in requirements.lock; re-check on upgrade).
_gx_pandas_engine.HASH_THRESHOLD = 0


class ValidationParams(BaseModel):
    """What a batch is checked against; thresholds live here and nowhere else."""

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
    max_quarantine_share: float = Field(0.01, ge=0, le=1)
    max_unknown_user_share: float = Field(0.2, ge=0, le=1, description="users not in the catalog")
    max_new_user_share: float = Field(0.5, ge=0, le=1, description="events of never-seen users")
    max_new_item_share: float = Field(0.5, ge=0, le=1, description="events of never-seen items")
    min_volume_ratio: float = Field(
        0.5, ge=0, description="a new day needs this share of the trailing daily volume"
    )


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
        "duplicate_event_id",
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
        return max(0.0, 1.0 - params.max_quarantine_share / present)

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
        (USER_IN_CATALOG, params.known_users, params.max_unknown_user_share),
        (USER_SEEN_BEFORE, params.seen_users, params.max_new_user_share),
        (ITEM_SEEN_BEFORE, params.seen_items, params.max_new_item_share),
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
            column="n_events", min_value=params.min_volume_ratio * params.trailing_daily_volume
        )
    )
    return suite


def new_day_volumes(batch: pl.DataFrame, history_dates: frozenset[date]) -> pl.DataFrame:
    """One row per event date of ``batch`` not already in the clean history: its event count.
    Dates already in history only receive late events, which say nothing about volume."""
    days = batch.group_by(pl.col(C.event_ts).dt.date().alias("day")).agg(pl.len().alias("n_events"))
    return days.filter(~pl.col("day").is_in(sorted(history_dates))).sort("day")


@dataclass(frozen=True)
class ExpectationOutcome:
    """One expectation's verdict, flattened for reports and the warehouse."""

    expectation: str
    column: str | None
    success: bool
    unexpected_count: int | None
    unexpected_percent: float | None
    error: str | None = None
    observed: object = None
    examples: list[object] = field(default_factory=list)


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


def split_rows(batch: pl.DataFrame, params: ValidationParams) -> pl.DataFrame:
    """Add a ``reason`` column: the first rule a row breaks, or null for a clean row."""
    reason: pl.Expr = pl.lit(None, dtype=pl.String)
    for rule in reversed(ROW_RULES):
        reason = pl.when(rule.violated(params)).then(pl.lit(rule.reason)).otherwise(reason)
    return batch.with_columns(reason.alias(C.reason))


def data_docs_index(gx_root: Path) -> Path:
    """The Data Docs page a file context under ``gx_root`` builds."""
    return gx_root / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"


def run_expectations(
    batch: pd.DataFrame,
    build_suite: Callable[[], gx.ExpectationSuite],
    gx_root: Path | None = None,
) -> list[ExpectationOutcome]:
    """Validate a pandas batch with GX in SUMMARY mode.

    ``build_suite`` is called once the context exists (GX requires an active context to build
    expectations). Without ``gx_root`` the context is ephemeral. With it, a file context lives in
    ``<gx_root>/gx``: the suite (defined in code, stored as JSON on every run), a validation
    definition and a checkpoint named after the suite are kept there, every result is stored,
    and the checkpoint rebuilds the Data Docs (:func:`data_docs_index`).
    """
    if gx_root is None:
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        suite = build_suite()
        asset = context.data_sources.add_pandas("recs").add_dataframe_asset(suite.name)
        definition = asset.add_batch_definition_whole_dataframe("batch")
        result = definition.get_batch(batch_parameters={"dataframe": batch}).validate(
            suite, result_format="SUMMARY"
        )
    else:
        files = gx.get_context(mode="file", project_root_dir=str(gx_root))
        files.variables.progress_bars = ProgressBarsConfig(globally=False)
        suite = files.suites.add_or_update(build_suite())
        source = cast(
            PandasDatasource,
            files.data_sources.get("recs")
            if "recs" in files.data_sources.all()
            else files.data_sources.add_pandas("recs"),
        )
        names = {a.name for a in source.assets}
        asset = (
            source.get_asset(suite.name)
            if suite.name in names
            else source.add_dataframe_asset(suite.name)
        )
        definition = (
            asset.get_batch_definition("batch")
            if any(d.name == "batch" for d in asset.batch_definitions)
            else asset.add_batch_definition_whole_dataframe("batch")
        )
        validation = files.validation_definitions.add_or_update(
            gx.ValidationDefinition(name=suite.name, data=definition, suite=suite)
        )
        checkpoint = files.checkpoints.add_or_update(
            gx.Checkpoint(
                name=suite.name,
                validation_definitions=[validation],
                actions=[UpdateDataDocsAction(name="update-data-docs")],
                result_format={"result_format": "SUMMARY"},
            )
        )
        run = checkpoint.run(batch_parameters={"dataframe": batch})
        (result,) = run.run_results.values()
    outcomes = []
    for r in result.results:
        config = r.expectation_config
        assert config is not None  # set on every result of a suite validation
        exc = r.exception_info or {}
        raised = exc.get("raised_exception", False)
        outcomes.append(
            ExpectationOutcome(
                expectation=config.type,
                column=config.kwargs.get("column"),
                # A malformed expectation reports failure instead of raising: surface it.
                success=bool(r.success) and not raised,
                unexpected_count=r.result.get("unexpected_count"),
                unexpected_percent=r.result.get("unexpected_percent"),
                error=str(exc.get("exception_message")) if raised else None,
                observed=r.result.get("observed_value"),
                examples=list(r.result.get("partial_unexpected_list") or []),
            )
        )
    return outcomes


def _describe(o: ExpectationOutcome) -> str:
    """One failed expectation in words: which, on what, how many, and a few examples."""
    text = f"expectation {o.expectation}" + (f" on column {o.column!r}" if o.column else "")
    if o.unexpected_count is not None and o.unexpected_percent is not None:
        text += f" failed: {o.unexpected_count} unexpected ({o.unexpected_percent:.3f}%)"
    elif o.observed is not None:
        text += f" failed: observed {o.observed}"
    else:
        text += " failed"
    if o.examples:
        text += f", e.g. {o.examples[:3]}"
    return text + (f" (error: {o.error})" if o.error else "")


def to_gx_frame(batch: pl.DataFrame) -> pd.DataFrame:
    """Pandas copy for GX: timestamps as datetime64[ns, UTC]."""
    frame = batch.to_pandas()
    for column in (C.event_ts, C.ingested_at):
        if column in frame:
            frame[column] = frame[column].astype("datetime64[ns, UTC]")
    return frame


def _shares(frame: pl.DataFrame) -> dict[str, float]:
    """Share of rows each expectation's ``mostly`` applies to (see :func:`events_suite`)."""
    if not frame.height:
        return {}
    shares = {c: 1.0 - frame[c].null_count() / frame.height for c in frame.columns}
    if C.event_type in frame.columns and C.value in frame.columns:
        rating = frame[C.event_type] == "rating"
        shares["rating"] = float(rating.sum()) / frame.height
        shares["rating_value"] = float((rating & frame[C.value].is_not_null()).sum()) / frame.height
    return shares


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
        to_gx_frame(shown), lambda: events_suite(params, _shares(shown)), gx_root
    )
    if params.trailing_daily_volume and history_dates is not None and C.event_ts in shown.columns:
        volumes = new_day_volumes(shown, history_dates)
        if volumes.height:
            outcomes += run_expectations(
                volumes.to_pandas(), lambda: daily_volume_suite(params), gx_root
            )
    failures = [_describe(o) for o in outcomes if not o.success]
    schema_ok = set(EVENTS.names) <= set(frame.columns)
    if schema_ok:
        labelled = split_rows(flagged, params).drop(flags)
        quarantined = labelled.filter(pl.col(C.reason).is_not_null())
        clean = labelled.filter(pl.col(C.reason).is_null()).drop(C.reason)
    else:
        # A schema change quarantines nothing row by row: the whole batch is refused.
        quarantined = frame.with_columns(pl.lit("schema_mismatch").alias(C.reason))
        clean = frame.clear()
    share = quarantined.height / frame.height if frame.height else 0.0
    if share > params.max_quarantine_share:
        failures.append(
            f"quarantined share {share:.2%} exceeds max_quarantine_share "
            f"{params.max_quarantine_share:.2%} ({quarantined.height} of {frame.height} rows)"
        )
    return ValidationResult(
        clean=clean,
        quarantined=quarantined,
        outcomes=outcomes,
        quarantine_share=share,
        max_quarantine_share=params.max_quarantine_share,
        failures=failures,
    )


class ValidationError(RuntimeError):
    """A batch failed the gate; the message names every failed expectation."""

    def __init__(self, batch_name: str, failures: Sequence[str]) -> None:
        self.failures = list(failures)
        super().__init__(f"validation of {batch_name} failed:\n  - " + "\n  - ".join(failures))


def recommendations_suite(k: int, n_users: int) -> gx.ExpectationSuite:
    """The lists about to be published: exactly ``k`` rows for each of the ``n_users`` expected
    users (none missing, no stranger: ``expected_user``), ranks 1..k, no duplicate rank or item
    per user, finite scores, only available items (``available_item``), none the user has already
    interacted with (``already_seen``). The three flags come from
    :func:`validate_recommendations`."""
    e = gx.expectations
    n = n_users
    suite = gx.ExpectationSuite(name="recommendations")
    for expectation in (
        e.ExpectTableRowCountToEqual(value=k * n),
        e.ExpectColumnUniqueValueCountToBeBetween(column=C.user_id, min_value=n, max_value=n),
        e.ExpectColumnValuesToBeInSet(column="expected_user", value_set=[True]),
        e.ExpectColumnValuesToBeBetween(column=C.rank, min_value=1, max_value=k),
        e.ExpectCompoundColumnsToBeUnique(column_list=[C.user_id, C.rank]),
        e.ExpectCompoundColumnsToBeUnique(column_list=[C.user_id, C.item_id]),
        e.ExpectColumnValuesToNotBeNull(column=C.score),
        e.ExpectColumnValuesToBeBetween(column=C.score, min_value=-1e300, max_value=1e300),
        e.ExpectColumnValuesToBeInSet(column="available_item", value_set=[True]),
        e.ExpectColumnValuesToBeInSet(column="already_seen", value_set=[False]),
        e.ExpectColumnValuesToBeInSet(column=C.source, value_set=list(RECOMMENDATION_SOURCES)),
    ):
        suite.add_expectation(expectation)
    return suite


def validate_recommendations(
    recs: pl.DataFrame,
    *,
    k: int,
    expected_users: pl.Series,
    seen: pl.DataFrame,
    available_items: pl.Series,
    gx_root: Path | None = None,
) -> list[str]:
    """Run :func:`recommendations_suite`; returns the failures (empty when the lists may be
    published), each naming the expectation and a few offending values."""
    flagged = recs.select(C.user_id, C.rank, C.item_id, C.score, C.source).join(
        seen.select(C.user_id, C.item_id).unique().with_columns(already_seen=pl.lit(True)),
        on=[C.user_id, C.item_id],
        how="left",
    )
    flagged = flagged.with_columns(
        pl.col("already_seen").fill_null(False),
        expected_user=pl.col(C.user_id).is_in(expected_users.implode()),
        available_item=pl.col(C.item_id).is_in(available_items.implode()),
    )
    n_users = expected_users.n_unique()
    outcomes = run_expectations(
        flagged.to_pandas(), lambda: recommendations_suite(k, n_users), gx_root
    )
    return [_describe(o) for o in outcomes if not o.success]


MAX_DOMAIN_VALUES = 1000
"""Attributes with more distinct values than this are free text, not a domain."""


def catalog_suite(
    name: str, id_column: str, columns: Sequence[str], domains: Mapping[str, list[str]],
    max_new_value_share: float,
) -> gx.ExpectationSuite:  # fmt: skip
    """A catalog snapshot: ids present and unique, ``available`` (items) a boolean, and each
    attribute with a known domain (the previous snapshot's values) mostly within it."""
    e = gx.expectations
    suite = gx.ExpectationSuite(name=f"{name}_catalog")
    suite.add_expectation(e.ExpectColumnValuesToNotBeNull(column=id_column))
    suite.add_expectation(e.ExpectColumnValuesToBeUnique(column=id_column))
    if C.available in columns:
        suite.add_expectation(e.ExpectColumnValuesToNotBeNull(column=C.available))
        suite.add_expectation(
            e.ExpectColumnValuesToBeInSet(column=C.available, value_set=[True, False])
        )
    for column, values in domains.items():
        suite.add_expectation(
            e.ExpectColumnValuesToBeInSet(
                column=column, value_set=values, mostly=1.0 - max_new_value_share
            )
        )
    return suite


def validate_catalog(
    table: pa.Table,
    *,
    name: str,
    id_column: str,
    previous: pa.Table | None = None,
    max_new_value_share: float = 0.05,
    gx_root: Path | None = None,
) -> list[str]:
    """Run :func:`catalog_suite` on a new snapshot; returns the failures (empty: it may be used).

    Domains come from ``previous`` (the last accepted snapshot): string attributes present in
    both with at most :data:`MAX_DOMAIN_VALUES` distinct values before.
    """
    frame = pl.DataFrame(table)
    domains: dict[str, list[str]] = {}
    if previous is not None:
        before = pl.DataFrame(previous)
        for column, dtype in before.schema.items():
            if column == id_column or dtype != pl.String or frame.schema.get(column) != pl.String:
                continue
            values = before[column].drop_nulls().unique()
            if 0 < values.len() <= MAX_DOMAIN_VALUES:
                domains[column] = sorted(values.to_list())
    outcomes = run_expectations(
        frame.to_pandas(),
        lambda: catalog_suite(name, id_column, frame.columns, domains, max_new_value_share),
        gx_root,
    )
    return [_describe(o) for o in outcomes if not o.success]
