"""Validate stage: the events suite gates each batch of new raw partition files; clean rows go to
the clean zone, the rest to the warehouse ``quarantine`` table with a reason."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Literal

import polars as pl
import pyarrow as pa

from features.contracts import C, quarantine_rows
from pipelines.stores import Stores, cluster, lake, warehouse
from pipelines.suites.events import (
    ValidationParams,
    ValidationThresholds,
    events_suite,
    gate,
    validate_events,
)
from pipelines.suites.runner import (
    ExpectationOutcome,
    ValidationError,
    keep_added_up,
    offline_data_docs,
)
from pipelines.validate_shards import SHARD_ROWS, stage_clean, validate_units

WAYS_FORWARD = (
    "\nways forward: fix the data and run `recs run validate` again, "
    "or `recs validate accept {batch} --reason ...`, or `recs validate skip {batch} --reason ...`"
)


@dataclass(frozen=True)
class ValidateReport:
    """Counts of one validation; ``rows_in == rows_clean + rows_quarantined``."""

    units: list[str]
    rows_in: int
    rows_clean: int
    rows_quarantined: int
    quarantined_by_reason: dict[str, int]
    expectations_passed: int
    expectations_failed: int
    failures: list[str] = field(default_factory=list)
    data_docs: str | None = None


def validate(
    stores: Stores,
    *,
    run_id: str,
    now: datetime,
    units: list[str] | None = None,
    thresholds: ValidationThresholds,
    accepted: str | None = None,
    dask_address: str | None = None,
    shard_rows: int = SHARD_ROWS,
) -> ValidateReport:
    """Gate the given raw partition files (default: all not validated yet) with GX, then split
    their rows. ``now`` stamps the verdict; events later than now plus the allowed clock skew
    are quarantined as ``future_timestamp``.

    Clean rows go to the same partition files in the clean zone; quarantined rows go to the
    warehouse ``quarantine`` table with a reason; the verdict goes to ``validation_runs``.

    ``accepted`` (an operator's reason, see :func:`decide_batch`) lets a batch that fails its
    table-level checks through; its rows are still split by the row rules.

    With ``dask_address`` (a Dask scheduler) the raw files are validated in shards of at least
    ``shard_rows`` rows (whole files) on the cluster, and the stage adds their verdicts up
    (:mod:`pipelines.validate_shards`): the same verdict, clean files and quarantine as in one
    piece.

    Raises:
        ValidationError: the batch failed; nothing reaches the clean zone or the quarantine (its
            raw files stay pending for the next run), and the message names every failed
            expectation, the batch id (this run's id) and the ways forward.
    """
    lake.finish_staged(stores.lake, "clean", _committed_batches(stores))
    units = pending(stores) if units is None else units
    if not units:
        return ValidateReport([], 0, 0, 0, {}, 0, 0)
    batch = None
    if dask_address is None:
        batch = lake.read_units(stores.lake, "raw", units, unit_column="_unit")
        first = batch[C.event_ts].min()
    else:  # the shards read the files; the history needs only the batch's first timestamp
        first = _first_event_ts(stores, units)
    items = _catalog_ids(stores, "items", C.item_id)
    users = _catalog_ids(stores, "users", C.user_id)
    history = lake.clean_history(
        stores.lake, exclude=units, before=first if isinstance(first, datetime) else None
    )
    params = ValidationParams(
        window_end=now + timedelta(minutes=thresholds.clock_skew_minutes),
        known_items=items,
        known_users=users,
        seen_users=history.users,
        seen_items=history.items,
        trailing_daily_volume=history.trailing_daily_volume,
        thresholds=thresholds,
    )
    if batch is not None:
        checked = _checked_here(stores, batch, units, params, history.dates, run_id)
    else:
        with cluster.connect(dask_address) as client:
            sharded = validate_units(client, stores.lake, units, params, run_id, shard_rows)
        if stores.gx_root is not None:  # stamped by the wall clock, as GX's checkpoints do
            keep_added_up(
                stores.gx_root, lambda: events_suite(params, sharded.shares), sharded.outcomes,
                run_name=run_id, run_time=datetime.now(UTC), batch=f"added-up-{len(units)}-files",
            )  # fmt: skip
        outcomes, failures, share = gate(
            sharded.outcomes,
            params,
            rows=sharded.rows,
            quarantined=sharded.quarantined.height,
            clean_days=sharded.clean_days,
            history_dates=history.dates,
            gx_root=stores.gx_root,
        )
        checked = _Checked(
            outcomes, failures, share, sharded.rows, sharded.clean_rows, sharded.quarantined,
            partial(_settle_staged, sharded.staged),
        )  # fmt: skip
    report = ValidateReport(
        units=units,
        rows_in=checked.rows_in,
        rows_clean=checked.rows_clean,
        rows_quarantined=checked.quarantined.height,
        quarantined_by_reason=_counts_by_reason(checked.quarantined),
        expectations_passed=sum(o.success for o in checked.outcomes),
        expectations_failed=sum(not o.success for o in checked.outcomes),
        failures=checked.failures,
        data_docs=str(offline_data_docs(stores.gx_root)) if stores.gx_root else None,
    )
    success = not checked.failures
    passes = success or accepted is not None
    # Written aside first (named by this run), renamed into place after the warehouse commit: a
    # kill before the commit leaves nothing visible (the next run removes the staged files); a
    # kill after it is finished by the next run, which renames them (the commit was the verdict).
    staged = checked.settle(passes)
    verdict = pa.table(
        {
            "run_id": [run_id],
            "validated_at": pa.array([now], pa.timestamp("us", tz="UTC")),
            "units": [",".join(units)],
            "success": [success],
            "rows_in": [report.rows_in],
            "rows_clean": [report.rows_clean],
            "rows_quarantined": [report.rows_quarantined],
            "quarantine_share": [checked.share],
            "expectations_failed": [report.expectations_failed],
            "failures": ["\n".join(checked.failures)],
            "accepted": pa.array([accepted], pa.string()),
        }
    )
    committed = False
    try:
        with warehouse.connect(stores.warehouse) as con:
            with warehouse.transaction(con):
                # A failed batch stays pending in the raw zone and is validated again after
                # the fix, so only a passing (or accepted) batch quarantines its rows.
                if passes:
                    rows = _quarantine_table(stores, checked.quarantined, run_id, now)
                    warehouse.replace_quarantine(con, "validate", units, rows)
                warehouse.append(con, "validation_runs", verdict)
            committed = True  # the verdict is the commit
    except BaseException:
        if not committed:  # after the commit, the next run renames them (finish_staged)
            for step in staged:
                step.abort()
        raise
    if not passes:
        raise ValidationError(
            f"batch {run_id}: {len(units)} raw partition file(s) ({units[0]}, ...)",
            checked.failures,
            WAYS_FORWARD.format(batch=run_id),
        )
    for step in staged:
        step.commit()
    return report


@dataclass(frozen=True)
class _Checked:
    """A batch's verdict and row split, however it was computed. ``settle(passes)`` returns the
    clean files staged under the run's id for the commit; a batch that does not pass stages
    none and leaves none behind."""

    outcomes: list[ExpectationOutcome]
    failures: list[str]
    share: float
    rows_in: int
    rows_clean: int
    quarantined: pl.DataFrame
    settle: Callable[[bool], list[lake.StagedUnit]]


def _checked_here(
    stores: Stores,
    batch: pl.DataFrame,
    units: list[str],
    params: ValidationParams,
    history_dates: frozenset[date] | None,
    run_id: str,
) -> _Checked:
    """The batch validated in one piece, in this process."""
    result = validate_events(
        batch, params, passthrough=["_unit"], history_dates=history_dates, gx_root=stores.gx_root
    )

    def stage(passes: bool) -> list[lake.StagedUnit]:
        return stage_clean(stores.lake, units, result.clean, run_id) if passes else []

    return _Checked(
        result.outcomes, result.failures, result.quarantine_share, batch.height,
        result.clean.height, result.quarantined, stage,
    )  # fmt: skip


def _settle_staged(staged: list[lake.StagedUnit], passes: bool) -> list[lake.StagedUnit]:
    """Shards staged every file's clean rows already: kept for the commit, or removed."""
    if not passes:
        for step in staged:
            step.abort()
        return []
    return staged


def _counts_by_reason(quarantined: pl.DataFrame) -> dict[str, int]:
    rows = quarantined.group_by(C.reason).len().sort(C.reason).iter_rows()
    return {str(reason): int(n) for reason, n in rows}


def _first_event_ts(stores: Stores, units: list[str]) -> datetime | None:
    """The earliest event time of the raw files (their Parquet statistics mostly answer)."""
    files = [str(lake.unit_path(stores.lake, "raw", u)) for u in units]
    first = pl.scan_parquet(files).select(pl.col(C.event_ts).min()).collect().item()
    return first if isinstance(first, datetime) else None


def _quarantine_table(
    stores: Stores, quarantined: pl.DataFrame, run_id: str, now: datetime
) -> pa.Table:
    """The warehouse rows of a batch's quarantined events, each keyed by its partition file."""
    root = lake.zone_dir(stores.lake, "raw")
    files = quarantined["_unit"].cast(pl.String)
    units = {f: str(Path(f).relative_to(root)) for f in files.unique().to_list()}
    parts = files.replace_strict(units, return_dtype=pl.String).to_arrow()
    events = quarantined.drop("_unit")
    rows = quarantine_rows(
        stage="validate",
        reasons=events[C.reason].to_arrow(),
        source=events[C.source].to_arrow(),
        line_no=None,
        event_id=events[C.event_id].to_arrow(),
        raw=events.drop(C.reason)
        .select(pl.struct(pl.all()).struct.json_encode())
        .to_series()
        .to_arrow(),
        run_id=run_id,
        at=now,
    )
    return rows.append_column("part", parts)


def _committed_batches(stores: Stores) -> set[str]:
    """Run ids whose verdict let their batch into the clean zone (passed or accepted)."""
    if not stores.warehouse.exists():
        return set()
    with warehouse.connect(stores.warehouse, read_only=True) as con:
        if not warehouse.table_exists(con, "validation_runs"):
            return set()
        rows = con.execute(
            "select distinct run_id from validation_runs where success or accepted is not null"
        ).fetchall()
    return {str(r[0]) for r in rows}


def pending(stores: Stores) -> list[str]:
    """Raw partition files to validate: not validated yet, and not skipped by an operator
    (unless extracted again since the skip)."""
    skipped = warehouse.skipped_units(stores.warehouse)
    mtimes = lake.units(stores.lake, "raw")
    return [
        u for u in lake.pending_units(stores.lake) if u not in skipped or mtimes[u] > skipped[u]
    ]


@dataclass(frozen=True)
class BatchDecision:
    """An operator's way forward for a failed batch: accepted (validated with its table-level
    failures overridden) or skipped (its raw files stay in the raw zone, out of the clean one)."""

    batch_id: str
    action: Literal["accept", "skip"]
    reason: str
    units: list[str]
    rows: int
    validation: ValidateReport | None


def decide_batch(
    stores: Stores,
    *,
    batch_id: str,
    action: Literal["accept", "skip"],
    reason: str,
    run_id: str,
    now: datetime,
    thresholds: ValidationThresholds,
) -> BatchDecision:
    """Accept or skip the failed batch ``batch_id`` (the run id its error named), recorded in
    ``batch_decisions`` with the reason, one row per raw file.

    Accepting validates the batch's still-pending files now, row rules and all, letting its
    table-level failures through. Skipping leaves them in the raw zone (nothing is deleted) and
    out of every later validation until they are extracted again.

    Raises:
        ValueError: an empty reason.
        LookupError: no failed batch has that id, or none of its files is still pending.
    """
    if not reason.strip():
        raise ValueError("--reason: say why the batch is accepted or skipped")
    units = warehouse.failed_batch_units(stores.warehouse, batch_id)
    still = set(pending(stores))
    units = [u for u in units if u in still]
    if not units:
        raise LookupError(
            f"batch {batch_id}: none of its raw files is pending any more "
            "(validated, accepted or skipped since)"
        )
    mtimes = lake.units(stores.lake, "raw")
    rows = lake.read_units(stores.lake, "raw", units, unit_column="_unit").height
    report = None
    if action == "accept":
        report = validate(
            stores, run_id=run_id, now=now, units=units, thresholds=thresholds, accepted=reason
        )
    with warehouse.connect(stores.warehouse) as con:
        warehouse.append(
            con,
            "batch_decisions",
            pa.table(
                {
                    "batch_id": [batch_id] * len(units),
                    "unit": units,
                    "action": [action] * len(units),
                    "reason": [reason] * len(units),
                    "raw_mtime": [mtimes[u] for u in units],
                    "decided_at": pa.array([now] * len(units), pa.timestamp("us", tz="UTC")),
                    "run_id": [run_id] * len(units),
                }
            ),
        )
    return BatchDecision(batch_id, action, reason, units, rows, report)


def _catalog_ids(stores: Stores, name: str, column: str) -> frozenset[str]:
    table = lake.read_catalog(stores.lake, name, columns=[column])
    if table is None:
        raise FileNotFoundError(
            f"{lake.catalog_path(stores.lake, name)}: no catalog snapshot; run `recs run extract`"
        )
    return frozenset(table.column(column).to_pylist())
