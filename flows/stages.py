"""The stages of the nightly run as plain functions: paths and typed parameters in, a report out.

Each stage reads its inputs from the lake / warehouse / MLflow and writes its outputs there, so a
stage can be run on its own (``recs run <stage>``) and every Prefect task in ``flows.nightly`` is a
one-line wrapper. Nothing here imports Prefect; clocks and run ids are passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from features.build import FEATURE_TABLES, register_inputs, run_sql
from features.contracts import (
    EVENTS,
    RECOMMENDATIONS,
    SIMILAR_ITEMS,
    C,
    ContractError,
    conform,
    quarantine_rows,
)
from features.matrices import training_matrices
from models.base import Recommender
from models.baselines import PopularityRecommender
from models.evaluate import ranking_metrics
from models.lightfm_model import train_lightfm
from models.params import LightFMParams
from models.registry import Tracking, load_champion, log_training_run
from pipelines import lake, warehouse
from pipelines.extract import (
    SourceReport,
    extract_file,
    extract_postgres,
    file_checksum,
    file_date,
    postgres_window,
    read_catalog,
)
from pipelines.publish import ServingStore, check_recommendations, publish_recommendations
from pipelines.sources import FileSource, PostgresSource, Typed
from pipelines.validate import (
    ValidationError,
    ValidationParams,
    data_docs_index,
    validate_catalog,
    validate_events,
    validate_recommendations,
)


@dataclass(frozen=True)
class Paths:
    """Where each store lives (from :class:`flows.settings.Settings`)."""

    landing: Path
    lake: Path
    warehouse: Path
    serving_url: str
    gx_root: Path | None = None  # GX file context and Data Docs under <gx_root>/gx (None: none)


# ---------------------------------------------------------------------------------------------
# extract


@dataclass(frozen=True)
class ExtractReport:
    """Counts of one extraction over all sources; ``rows_read == rows_written + rows_rejected``."""

    sources: list[SourceReport]
    n_users: int
    n_items: int

    @property
    def units(self) -> list[str]:
        return [u for s in self.sources for u in s.units]

    @property
    def files_skipped(self) -> int:
        return sum(s.files_skipped for s in self.sources)

    @property
    def rows_read(self) -> int:
        return sum(s.rows_read for s in self.sources)

    @property
    def rows_written(self) -> int:
        return sum(s.rows_written for s in self.sources)

    @property
    def rows_rejected(self) -> int:
        return sum(s.rows_rejected for s in self.sources)

    @property
    def rejected_by_reason(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.sources:
            for reason, n in s.rejected_by_reason.items():
                out[reason] = out.get(reason, 0) + n
        return dict(sorted(out.items()))


def _manifest_row(
    run_id: str, source: str, file: str, checksum: str | None, report: SourceReport | Typed,
    at: datetime, low: datetime | None = None, high: datetime | None = None, backfill: bool = False,
) -> pa.Table:  # fmt: skip
    if isinstance(report, Typed):
        read, written, rejected = report.n_read, report.events.num_rows, report.rejects.num_rows
    else:
        read, written, rejected = report.rows_read, report.rows_written, report.rows_rejected
    ts = pa.timestamp("us", tz="UTC")
    return pa.table(
        {
            "run_id": [run_id],
            "source": [source],
            "file": [file],
            "checksum": pa.array([checksum], pa.string()),
            "watermark_low": pa.array([low], ts),
            "watermark_high": pa.array([high], ts),
            "backfill": [backfill],
            "rows_read": [read],
            "rows_written": [written],
            "rows_rejected": [rejected],
            "extracted_at": pa.array([at], ts),
        }
    )


def extract(
    paths: Paths,
    *,
    sources: Sequence[FileSource | PostgresSource],
    run_id: str,
    ingested_at: datetime,
    force: bool = False,
    since: date | None = None,
    until: date | None = None,
) -> ExtractReport:
    """Sources -> raw lake; catalogs -> lake snapshots; untypeable records -> quarantine.

    A file already extracted with the same checksum is skipped unless ``force`` or (backfill) its
    name carries a date in ``[since, until]``. A database source reads from its last watermark minus
    its lookback, or exactly ``[since, until]`` for a backfill (the watermark is then kept).
    """
    users = read_catalog(paths.landing / "users.csv", C.user_id)
    items = read_catalog(paths.landing / "items.csv", C.item_id, required=(C.available,))
    for name, id_column, table in (("users", C.user_id, users), ("items", C.item_id, items)):
        latest = paths.lake / "catalog" / f"{name}.parquet"
        failures = validate_catalog(
            table, name=name, id_column=id_column,
            previous=pq.read_table(latest) if latest.exists() else None, gx_root=paths.gx_root,
        )  # fmt: skip
        if failures:
            raise ValidationError(str(paths.landing / f"{name}.csv"), failures)
    for name, table in (("users", users), ("items", items)):
        lake.write_catalog(paths.lake, name, table, run_id=run_id)
    backfill = since is not None or until is not None
    reports = []
    with warehouse.connect(paths.warehouse) as con:
        done: dict[tuple[str, str], str] = {}
        watermarks: dict[str, datetime] = {}
        if warehouse.table_exists(con, "extractions"):
            rows = con.execute(
                "select source, file, arg_max(checksum, extracted_at) from extractions "
                "where checksum is not null group by all"
            ).fetchall()
            done = {(str(s), str(f)): str(c) for s, f, c in rows}
            marks = con.execute(
                "select source, max(watermark_high) from extractions "
                "where not backfill and watermark_high is not null group by source"
            ).fetchall()
            watermarks = {str(s): w for s, w in marks}
        for source in sources:
            if isinstance(source, FileSource):
                report = _extract_file_source(
                    con, paths, source, done=done, force=force, since=since, until=until,
                    run_id=run_id, ingested_at=ingested_at,
                )  # fmt: skip
            else:
                if backfill:
                    low = _midnight(since) if since else None
                    high = _midnight(until) + timedelta(days=1) if until else ingested_at
                else:
                    lookback = timedelta(hours=source.lookback_hours)
                    low, high = postgres_window(watermarks.get(source.name), lookback, ingested_at)
                report, rejects = extract_postgres(
                    source, paths.lake, low=low, high=high, ingested_at=ingested_at, run_id=run_id
                )
                if rejects.num_rows:
                    warehouse.append(con, "quarantine", rejects)
                warehouse.append(
                    con, "extractions",
                    _manifest_row(run_id, source.name, source.table, None, report, ingested_at,
                                  low, high, backfill),
                )  # fmt: skip
            reports.append(report)
    return ExtractReport(reports, users.num_rows, items.num_rows)


def _extract_file_source(
    con: duckdb.DuckDBPyConnection,
    paths: Paths,
    source: FileSource,
    *,
    done: dict[tuple[str, str], str],
    force: bool,
    since: date | None,
    until: date | None,
    run_id: str,
    ingested_at: datetime,
) -> SourceReport:
    """Every new or changed file of a file source (or, for a backfill, every file dated in
    ``[since, until]``) into the raw lake, its rejects and manifest row into the warehouse."""
    report = SourceReport(source.name)
    files = source.files(paths.landing / "events")
    if not files:
        raise FileNotFoundError(
            f"source {source.name!r}: no files matching {source.patterns()} in "
            f"{source.path or paths.landing / 'events'}; run `recs generate`, "
            "`recs import ...` or drop exports there"
        )
    backfill = since is not None or until is not None
    for path in files:
        checksum = file_checksum(path)
        day = file_date(path)
        in_range = (
            backfill
            and day is not None
            and (since is None or day >= since)
            and (until is None or day <= until)
        )
        if not (force or in_range) and done.get((source.name, path.name)) == checksum:
            report.files_skipped += 1
            continue
        typed, units = extract_file(
            path, source, paths.lake, ingested_at=ingested_at, run_id=run_id
        )
        report.add(typed, str(path))
        report.units.extend(units)
        report.files_read += 1
        if typed.rejects.num_rows:
            warehouse.append(con, "quarantine", typed.rejects)
        warehouse.append(
            con, "extractions",
            _manifest_row(run_id, source.name, path.name, checksum, typed, ingested_at),
        )  # fmt: skip
    return report


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


# ---------------------------------------------------------------------------------------------
# validate


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


class Thresholds(BaseModel):
    """Batch-level validation thresholds (from settings)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_unknown_user_share: float = 0.2
    max_new_user_share: float = 0.5
    max_new_item_share: float = 0.5
    min_volume_ratio: float = 0.5


@dataclass(frozen=True)
class CleanHistory:
    """What the clean lake held before a batch; all None when it held nothing."""

    dates: frozenset[date] | None
    trailing_daily_volume: float | None
    users: frozenset[str] | None
    items: frozenset[str] | None


def clean_history(
    lake_dir: Path, *, exclude: Sequence[str], before: datetime | None
) -> CleanHistory:
    """Dates, mean daily volume of the 7 dates before ``before``, and the users and items seen,
    over the clean zone minus the partition files in ``exclude`` (the ones being re-validated)."""
    root = lake.zone_dir(lake_dir, "clean")
    skip = set(exclude)
    files = [
        str(root / u)
        for u in lake.units(lake_dir, "clean")
        if u not in skip and not u.startswith("dt=__empty__/")
    ]
    if not files:
        return CleanHistory(None, None, None, None)
    con = duckdb.connect()
    try:
        con.execute("set TimeZone = 'UTC'")
        con.read_parquet(files).select("user_id, item_id, event_ts::date as day").to_table("h")
        days = dict(con.execute("select day, count(*) from h group by day").fetchall())
        users = frozenset(u for (u,) in con.execute("select distinct user_id from h").fetchall())
        items = frozenset(i for (i,) in con.execute("select distinct item_id from h").fetchall())
    finally:
        con.close()
    first_new = before.date() if before is not None else None
    trailing = sorted(d for d in days if first_new is None or d < first_new)[-7:]
    volume = sum(days[d] for d in trailing) / len(trailing) if trailing else None
    return CleanHistory(frozenset(days), volume, users, items)


def validate(
    paths: Paths,
    *,
    run_id: str,
    window_end: datetime,
    max_quarantine_share: float,
    units: list[str] | None = None,
    validated_at: datetime,
    thresholds: Thresholds | None = None,
) -> ValidateReport:
    """Gate the given raw partition files (default: all not validated yet) with GX, then split
    their rows.

    Clean rows go to the same partition files in the clean zone; quarantined rows go to the
    warehouse ``quarantine`` table with a reason; the verdict goes to ``validation_runs``.

    Raises:
        ValidationError: the batch failed; nothing reaches the clean zone or the quarantine (its
            raw files stay pending for the next run), and the message names every failed
            expectation.
    """
    units = lake.pending_units(paths.lake) if units is None else units
    if not units:
        return ValidateReport([], 0, 0, 0, {}, 0, 0)
    thresholds = thresholds or Thresholds()
    batch = lake.read_units(paths.lake, "raw", units, unit_column="_unit")
    items = pq.read_table(paths.lake / "catalog" / "items.parquet", columns=[C.item_id])
    users = pq.read_table(paths.lake / "catalog" / "users.parquet", columns=[C.user_id])
    first = batch[C.event_ts].min()
    history = clean_history(
        paths.lake, exclude=units, before=first if isinstance(first, datetime) else None
    )
    params = ValidationParams(
        window_end=window_end,
        known_items=frozenset(items.column(C.item_id).to_pylist()),
        known_users=frozenset(users.column(C.user_id).to_pylist()),
        seen_users=history.users,
        seen_items=history.items,
        trailing_daily_volume=history.trailing_daily_volume,
        max_quarantine_share=max_quarantine_share,
        **thresholds.model_dump(),
    )
    result = validate_events(
        batch, params, passthrough=["_unit"], history_dates=history.dates, gx_root=paths.gx_root
    )
    quarantined = result.quarantined.drop("_unit")
    report = ValidateReport(
        units=units,
        rows_in=batch.height,
        rows_clean=result.clean.height,
        rows_quarantined=quarantined.height,
        quarantined_by_reason=result.counts_by_reason(),
        expectations_passed=sum(o.success for o in result.outcomes),
        expectations_failed=sum(not o.success for o in result.outcomes),
        failures=result.failures,
        data_docs=str(data_docs_index(paths.gx_root)) if paths.gx_root else None,
    )
    with warehouse.connect(paths.warehouse) as con:
        # A failed batch stays pending in the raw zone and is validated again after the fix, so
        # only a passing batch quarantines its rows (once).
        if result.success and quarantined.height:
            warehouse.append(
                con,
                "quarantine",
                quarantine_rows(
                    stage="validate",
                    reasons=quarantined[C.reason].to_arrow(),
                    source=quarantined[C.source].to_arrow(),
                    line_no=None,
                    event_id=quarantined[C.event_id].to_arrow(),
                    raw=quarantined.drop(C.reason)
                    .select(pl.struct(pl.all()).struct.json_encode())
                    .to_series()
                    .to_arrow(),
                    run_id=run_id,
                    at=validated_at,
                ),
            )
        warehouse.append(
            con,
            "validation_runs",
            pa.table(
                {
                    "run_id": [run_id],
                    "validated_at": pa.array([validated_at], pa.timestamp("us", tz="UTC")),
                    "units": [",".join(units)],
                    "success": [result.success],
                    "rows_in": [report.rows_in],
                    "rows_clean": [report.rows_clean],
                    "rows_quarantined": [report.rows_quarantined],
                    "quarantine_share": [result.quarantine_share],
                    "expectations_failed": [report.expectations_failed],
                    "failures": ["\n".join(result.failures)],
                }
            ),
        )
    if not result.success:
        raise ValidationError(
            f"{len(units)} raw partition file(s) ({units[0]}, ...)", result.failures
        )
    by_file = _slices_by(result.clean, "_unit")
    for unit in units:
        rows = by_file.get(str(lake.zone_dir(paths.lake, "raw") / unit))
        table = rows.drop("_unit").to_arrow() if rows is not None else EVENTS.empty_table()
        lake.write_unit(paths.lake, "clean", unit, table)
    return report


def _slices_by(frame: pl.DataFrame, column: str) -> dict[str, pl.DataFrame]:
    """Rows per value of ``column`` as zero-copy slices: the rows of one file are contiguous
    (read in file order, filtered in order), which ``partition_by`` would copy for nothing."""
    out: dict[str, pl.DataFrame] = {}
    offset = 0
    for length, value in frame[column].rle().struct.unnest().iter_rows():
        part = frame.slice(offset, length)
        out[value] = pl.concat([out[value], part]) if value in out else part
        offset += length
    return out


# ---------------------------------------------------------------------------------------------
# features


def _feature_connection_inputs(paths: Paths) -> dict[str, Any]:
    return {
        "events_glob": lake.events_glob(paths.lake, "clean"),
        "users": paths.lake / "catalog" / "users.parquet",
        "items": paths.lake / "catalog" / "items.parquet",
    }


def latest_event_ts(paths: Paths) -> datetime:
    """Newest ``event_ts`` in the clean zone.

    Raises:
        FileNotFoundError: the clean zone is empty (run extract and validate first).
    """
    if not list(lake.zone_dir(paths.lake, "clean").glob("dt=[0-9]*/*.parquet")):
        raise FileNotFoundError(
            f"{lake.zone_dir(paths.lake, 'clean')}: no clean events; run `recs run extract` "
            "and `recs run validate` first"
        )
    con = duckdb.connect()  # in memory: the lake only, no lock on the warehouse
    try:
        con.execute("set TimeZone = 'UTC'")
        rows = con.execute(
            "select max(event_ts) from read_parquet(?)", [lake.events_glob(paths.lake, "clean")]
        ).fetchall()
    finally:
        con.close()
    value: datetime = rows[0][0]
    return value


def default_as_of(paths: Paths, holdout_days: int) -> datetime:
    """Midnight UTC ``holdout_days`` before the day after the newest clean event, so the last
    ``holdout_days`` full days are the evaluation window."""
    latest = latest_event_ts(paths)
    midnight = latest.replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight + timedelta(days=1) - timedelta(days=holdout_days)


@dataclass(frozen=True)
class FeaturesReport:
    """Rows per feature table written to the warehouse."""

    as_of: datetime
    holdout_end: datetime
    rows: dict[str, int]


def build_features(
    paths: Paths, *, as_of: datetime, holdout_days: int, top_k: int, popular_window_days: int = 14
) -> FeaturesReport:
    """Run every ``features/sql`` file against the clean lake and replace its warehouse table."""
    holdout_end = as_of + timedelta(days=holdout_days)
    params = {
        "as_of": as_of,
        "holdout_end": holdout_end,
        "top_n": top_k,
        "window_days": popular_window_days,
    }
    rows = {}
    with warehouse.connect(paths.warehouse) as con:
        register_inputs(con, **_feature_connection_inputs(paths))
        for name in FEATURE_TABLES:
            table = run_sql(con, name, **params)
            warehouse.replace(con, name, table)
            rows[name] = table.num_rows
        warehouse.append(
            con,
            "feature_runs",
            pa.table(
                {
                    "as_of": pa.array([as_of], pa.timestamp("us", tz="UTC")),
                    "holdout_end": pa.array([holdout_end], pa.timestamp("us", tz="UTC")),
                    **{f"rows_{k}": [v] for k, v in rows.items()},
                }
            ),
        )
    return FeaturesReport(as_of, holdout_end, rows)


def _read_tables(paths: Paths, *names: str) -> list[pl.DataFrame]:
    with warehouse.connect(paths.warehouse, read_only=True) as con:
        frames = []
        for name in names:
            if not warehouse.table_exists(con, name):
                raise FileNotFoundError(
                    f"{paths.warehouse}: no table {name!r}; run `recs run features` first"
                )
            frame = pl.from_arrow(con.sql(f'select * from "{name}"').to_arrow_table())
            assert isinstance(frame, pl.DataFrame)
            frames.append(frame)
    return frames


# ---------------------------------------------------------------------------------------------
# train


@dataclass(frozen=True)
class TrainReport:
    """A training run: its metrics, the baseline's and the champion's on the same holdout."""

    mlflow_run_id: str
    model_version: str
    promoted: bool
    decision: str
    metrics: dict[str, float]


def train(
    paths: Paths,
    tracking: Tracking,
    *,
    params: LightFMParams,
    k: int,
    run_id: str,
    as_of: datetime,
) -> TrainReport:
    """Train on events before ``as_of``, evaluate on the holdout after it, log to MLflow.

    The model is promoted (alias ``champion``) only if it beats both the popularity baseline and
    the current champion on precision@k over the same holdout users.
    """
    interactions, holdout, users, items = _read_tables(
        paths, "interactions", "holdout", "user_features", "item_features"
    )
    if interactions.height == 0:
        raise ValueError(f"no interactions before as_of={as_of.isoformat()}; nothing to train on")
    matrices = training_matrices(interactions, users, items)
    model = train_lightfm(matrices, params)
    holdout_users = users.filter(pl.col(C.user_id).is_in(holdout[C.user_id].unique().implode()))
    seen = interactions.select(C.user_id, C.item_id)
    candidates: dict[str, Recommender] = {
        "model": model,
        "baseline": PopularityRecommender.fit(interactions),
    }
    champion = load_champion(tracking)
    if champion is not None:
        candidates["champion"] = champion.recommender
    metrics: dict[str, float] = {}
    for name, recommender in candidates.items():
        recs = recommender.recommend(holdout_users, k, exclude=seen, num_threads=params.num_threads)
        for metric, value in ranking_metrics(recs, holdout, k).items():
            metrics[f"{name}_{metric}"] = value
    key = f"precision_at_{k}"
    beats_baseline = metrics[f"model_{key}"] > metrics[f"baseline_{key}"]
    beats_champion = champion is None or metrics[f"model_{key}"] > metrics[f"champion_{key}"]
    promote = beats_baseline and beats_champion and metrics["model_n_users"] > 0
    decision = (
        "promoted"
        if promote
        else "not promoted: "
        + (
            "did not beat the popularity baseline"
            if not beats_baseline
            else "did not beat the champion"
        )
    )
    logged = log_training_run(
        tracking,
        model,
        run_name=f"nightly-{as_of:%Y-%m-%d}",
        params={
            **{f"lightfm_{k_}": v for k_, v in params.model_dump().items()},
            "as_of": as_of.isoformat(),
            "k": k,
            "n_users": users.height,
            "n_items": items.height,
            "n_interactions": interactions.height,
            "n_holdout_pairs": holdout.height,
        },
        metrics=metrics,
        tags={
            "flow_run_id": run_id,
            "decision": decision,
            "champion_version": champion.version if champion else "none",
        },
        promote=promote,
    )
    return TrainReport(logged.run_id, logged.version, promote, decision, metrics)


# ---------------------------------------------------------------------------------------------
# score


@dataclass(frozen=True)
class ScoreReport:
    """Where the scored lists were written, and who got what kind."""

    path: Path
    model_version: str
    n_users: int
    rows_by_source: dict[str, int]
    similar_items: Path | None = None


def fill_to_k(primary: pl.DataFrame, fallback: pl.DataFrame, k: int) -> pl.DataFrame:
    """Per user, ``primary`` rows first, then ``fallback`` items not already listed; re-ranked
    1..k. One row per user_id x rank."""
    both = pl.concat([primary.with_columns(_o=pl.lit(0)), fallback.with_columns(_o=pl.lit(1))])
    return (
        both.sort(C.user_id, "_o", C.rank)
        .unique(subset=[C.user_id, C.item_id], keep="first", maintain_order=True)
        .with_columns(pl.int_range(1, pl.len() + 1).over(C.user_id).cast(pl.Int32).alias(C.rank))
        .filter(pl.col(C.rank) <= k)
        .drop("_o")
    )


def score(
    paths: Paths,
    tracking: Tracking,
    *,
    k: int,
    run_id: str,
    seen_before: datetime,
    generated_at: datetime,
    ttl: timedelta,
    num_threads: int,
) -> ScoreReport:
    """Top-k for every user in ``user_features`` with the ``@champion`` model.

    Items the user interacted with before ``seen_before`` and unavailable items are excluded.
    Users with neither history nor attributes, and every user when no model is champion yet, get
    the popularity list (``source`` = popular), as do the slots a model cannot fill.

    Raises:
        ValidationError: the lists fail the recommendations suite (nothing is written).
    """
    users, items = _read_tables(paths, "user_features", "item_features")
    con = duckdb.connect()  # in memory: only reads the lake
    try:
        register_inputs(con, **_feature_connection_inputs(paths))
        seen = pl.from_arrow(run_sql(con, "interactions", as_of=seen_before))
    finally:
        con.close()
    assert isinstance(seen, pl.DataFrame)
    seen = seen.select(C.user_id, C.item_id)
    available = items.filter(pl.col(C.available))[C.item_id]
    popular = PopularityRecommender.fit(seen).recommend(
        users, k, exclude=seen, allowed_items=available, num_threads=num_threads
    )
    champion = load_champion(tracking)
    if champion is None:
        recs, version = popular, "popularity"
    else:
        described = users.filter(pl.Series(champion.recommender.describes(users)))
        recs = champion.recommender.recommend(
            described, k, exclude=seen, allowed_items=available, num_threads=num_threads
        )
        recs, version = fill_to_k(recs, popular, k), champion.version
    failures = validate_recommendations(
        recs, k=k, expected_users=users[C.user_id], seen=seen, available_items=available,
        gx_root=paths.gx_root,
    )  # fmt: skip
    if failures:
        raise ValidationError(f"recommendations of run {run_id}", failures)
    table = recs.with_columns(
        model_version=pl.lit(version),
        run_id=pl.lit(run_id),
        generated_at=pl.lit(generated_at).cast(pl.Datetime("us", "UTC")),
        expires_at=pl.lit(generated_at + ttl).cast(pl.Datetime("us", "UTC")),
    ).to_arrow()
    table = conform(table, RECOMMENDATIONS, "scored recommendations")
    out = paths.lake / "recommendations" / f"run_id={run_id}" / "recommendations.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out, compression="zstd")
    similar_path = None
    if champion is not None:
        similar = champion.recommender.similar_items(
            k, allowed_items=available, num_threads=num_threads
        )
        similar_path = out.with_name("similar_items.parquet")
        pq.write_table(conform(similar.to_arrow(), SIMILAR_ITEMS, "similar items"), similar_path)
    by_source = dict(recs.group_by(C.source).len().sort(C.source).iter_rows())
    return ScoreReport(
        out, version, users.height, {str(s): int(n) for s, n in by_source.items()}, similar_path
    )


# ---------------------------------------------------------------------------------------------
# publish


@dataclass(frozen=True)
class PublishReport:
    """The publication recorded in the serving store."""

    serving_url: str
    run_id: str
    model_version: str
    n_users: int
    n_rows: int
    checksum: str


def publish(
    paths: Paths, *, recommendations: Path, k: int, clock: Callable[[], datetime]
) -> PublishReport:
    """Check the scored lists and swap them, with the popular lists, into the serving store."""
    table = pq.read_table(recommendations)
    if table.num_rows == 0:
        raise ContractError(f"{recommendations}: no recommendations to publish")
    (users,) = _read_tables(paths, "user_features")
    check_recommendations(table, k, expected_users=users[C.user_id])
    (popular,) = _read_tables(paths, "popular_items")
    run_id = str(table.column(C.run_id)[0])
    version = str(table.column("model_version")[0])
    similar_path = recommendations.with_name("similar_items.parquet")
    pub = publish_recommendations(
        ServingStore(paths.serving_url),
        table,
        popular.to_arrow(),
        similar_items=pq.read_table(similar_path) if similar_path.exists() else None,
        run_id=run_id,
        model_version=version,
        clock=clock,
    )
    report = PublishReport(
        paths.serving_url, run_id, version, pub.n_users, pub.n_rows, pub.checksum
    )
    with warehouse.connect(paths.warehouse) as con:
        row = {k_: [v] for k_, v in asdict(report).items()}
        row["published_at"] = [clock()]
        warehouse.append(con, "publications", pa.table(row))
    return report


def latest_recommendations(paths: Paths) -> Path:
    """The most recently scored recommendation file."""
    files = sorted(
        (paths.lake / "recommendations").glob("run_id=*/recommendations.parquet"),
        key=lambda p: p.stat().st_mtime,
    )
    if not files:
        raise FileNotFoundError(
            f"{paths.lake / 'recommendations'}: nothing scored; run `recs run score`"
        )
    return files[-1]


# ---------------------------------------------------------------------------------------------
# quarantine release


@dataclass(frozen=True)
class ReleaseReport:
    """Quarantined rows re-checked after a fix: how many passed and went to the clean zone."""

    rows_checked: int
    rows_released: int
    still_quarantined_by_reason: dict[str, int]
    units: list[str]


def release_quarantine(
    paths: Paths,
    *,
    run_id: str,
    window_end: datetime,
    released_at: datetime,
    reasons: Sequence[str] | None = None,
) -> ReleaseReport:
    """Re-validate rows that validation quarantined (optionally only some reasons) against the
    current rules and catalogs, e.g. after unknown items were added to the catalog, and release
    the ones that now pass into the clean zone (``dt=<day>/released-<run_id>.parquet``).

    A row is released at most once (``quarantine_releases`` records it); a row whose event id is
    already clean is never released (it would be a duplicate).
    """
    with warehouse.connect(paths.warehouse) as con:
        if not warehouse.table_exists(con, "quarantine"):
            return ReleaseReport(0, 0, {}, [])
        released_before = (
            "anti join quarantine_releases using (raw_md5)"
            if warehouse.table_exists(con, "quarantine_releases")
            else ""
        )
        candidates = pl.DataFrame(
            con.sql(
                f"""
                select distinct md5(raw) as raw_md5, reason, raw
                from (select *, md5(raw) as raw_md5 from quarantine where stage = 'validate')
                {released_before}
                """
            ).to_arrow_table()
        )
    if reasons:
        candidates = candidates.filter(pl.col(C.reason).is_in(list(reasons)))
    if candidates.height == 0:
        return ReleaseReport(0, 0, {}, [])
    schema = {name: pl.String for name in EVENTS.names}
    rows = (
        candidates.select(
            pl.col(C.raw).str.json_decode(pl.Struct(schema)).struct.unnest(), "raw_md5"
        )
        .with_columns(
            pl.col(C.event_ts, C.ingested_at).str.to_datetime(time_zone="UTC", time_unit="us"),
            pl.col(C.value).cast(pl.Float64),
        )
    )  # fmt: skip
    clean_ids = duckdb.execute(
        "select distinct event_id from read_parquet(?)", [lake.events_glob(paths.lake, "clean")]
    ).fetchall()
    already_clean = pl.Series([i for (i,) in clean_ids], dtype=pl.String)
    items = pq.read_table(paths.lake / "catalog" / "items.parquet", columns=[C.item_id])
    params = ValidationParams(
        window_end=window_end,
        known_items=frozenset(items.column(C.item_id).to_pylist()),
        max_quarantine_share=1.0,  # a selection, not a gate: every row is judged on its own
    )
    result = validate_events(rows, params, passthrough=["raw_md5"])
    passing = result.clean.filter(~pl.col(C.event_id).is_in(already_clean.implode()))
    still = pl.concat(
        [
            result.quarantined.select(C.reason),
            result.clean.filter(pl.col(C.event_id).is_in(already_clean.implode()))
            .with_columns(pl.lit("duplicate_event_id").alias(C.reason))
            .select(C.reason),
        ]
    )
    written = lake.write_part(
        paths.lake, "clean", f"{lake.RELEASED}{run_id}", passing.drop("raw_md5").to_arrow()
    ) if passing.height else []  # fmt: skip
    root = lake.zone_dir(paths.lake, "clean")
    with warehouse.connect(paths.warehouse) as con:
        if passing.height:
            warehouse.append(
                con,
                "quarantine_releases",
                passing.select(
                    "raw_md5",
                    C.event_id,
                    pl.lit(run_id).alias(C.run_id),
                    pl.lit(released_at).cast(pl.Datetime("us", "UTC")).alias("released_at"),
                ).to_arrow(),
            )
    return ReleaseReport(
        rows_checked=candidates.height,
        rows_released=passing.height,
        still_quarantined_by_reason=dict(sorted(still.group_by(C.reason).len().iter_rows())),
        units=[str(p.relative_to(root)) for p in written],
    )
