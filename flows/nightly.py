"""Prefect flows: one per stage, and ``nightly-recommendations`` running them in order.

Flows read the settings, the clock and the run id, then call the stage functions of
:mod:`flows.stages` as tasks; they compute nothing themselves.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from flows import stages
from flows.settings import Settings
from models.params import LightFMParams
from models.registry import Tracking

extract_task = task(name="extract-landing")(stages.extract)
validate_task = task(name="validate-events")(stages.validate)
features_task = task(name="feature-tables")(stages.build_features)
train_task = task(name="train-lightfm")(stages.train)
score_task = task(name="top-k-recommendations")(stages.score)
publish_task = task(name="publish-recommendations")(stages.publish)


def _paths(settings: Settings) -> stages.Paths:
    return stages.Paths(
        landing=settings.landing,
        lake=settings.lake,
        warehouse=settings.warehouse,
        serving_url=settings.serving,
        gx_root=settings.data_dir,
    )


def _tracking(settings: Settings) -> Tracking:
    return Tracking(
        tracking_uri=settings.tracking_uri,
        artifacts_dir=settings.mlflow_artifacts_dir,
        experiment_name=settings.experiment_name,
        model_name=settings.registered_model_name,
    )


def _run_id() -> str:
    current = flow_run.get_id()
    return str(current) if current else uuid.uuid4().hex


def _now() -> datetime:
    return datetime.now(UTC)


@flow(name="extract")
def extract_flow(
    force: bool = False, since: date | None = None, until: date | None = None
) -> stages.ExtractReport:
    """Extract what is new in every source into the raw lake (Parquet, partitioned by event date).

    Files already extracted with the same checksum are skipped unless ``force``; database sources
    read from their watermark minus the lookback. A backfill sets ``since``/``until`` (dates,
    inclusive): files dated in the range and database rows in it are read again. Records that
    cannot be typed go to the warehouse ``quarantine`` table with a reason.
    """
    settings = Settings()
    report = extract_task(
        _paths(settings), sources=settings.sources, run_id=_run_id(), ingested_at=_now(),
        force=force, since=since, until=until,
    )  # fmt: skip
    get_run_logger().info(
        "extracted %d partition files: read %d, written %d, rejected %d %s (%d unchanged files)",
        len(report.units), report.rows_read, report.rows_written, report.rows_rejected,
        report.rejected_by_reason, report.files_skipped,
    )  # fmt: skip
    return report


@flow(name="validate")
def validate_flow(units: list[str] | None = None) -> stages.ValidateReport:
    """Gate new raw parts with Great Expectations; clean rows to the clean zone, the rest to
    quarantine. Fails, naming the expectations, when the batch is bad as a whole."""
    settings = Settings()
    now = _now()
    report = validate_task(
        _paths(settings),
        run_id=_run_id(),
        window_end=now + timedelta(minutes=settings.clock_skew_minutes),
        max_quarantine_share=settings.max_quarantine_share,
        units=units,
        validated_at=now,
        thresholds=stages.Thresholds(
            max_unknown_user_share=settings.max_unknown_user_share,
            max_new_user_share=settings.max_new_user_share,
            max_new_item_share=settings.max_new_item_share,
            min_volume_ratio=settings.min_volume_ratio,
        ),
    )
    get_run_logger().info(
        "validated %d rows: %d clean, %d quarantined %s",
        report.rows_in, report.rows_clean, report.rows_quarantined, report.quarantined_by_reason,
    )  # fmt: skip
    create_markdown_artifact(
        _validation_summary(report), key="validation-summary",
        description="Expectations passed and failed, rows quarantined by reason",
    )  # fmt: skip
    return report


def _validation_summary(report: stages.ValidateReport) -> str:
    lines = [
        "# Validation of new events", "",
        f"- partition files: {len(report.units)}",
        f"- rows: {report.rows_in:,} in, {report.rows_clean:,} clean, "
        f"{report.rows_quarantined:,} quarantined",
        f"- expectations: {report.expectations_passed} passed, {report.expectations_failed} failed",
        "", "| reason | rows |", "|---|--:|",
        *(f"| {r} | {n:,} |" for r, n in report.quarantined_by_reason.items()),
    ]  # fmt: skip
    if report.data_docs:
        lines += ["", f"[Data Docs](file://{report.data_docs}) (`{report.data_docs}`)"]
    return "\n".join(lines)


@flow(name="features")
def features_flow(as_of: datetime | None = None) -> stages.FeaturesReport:
    """Build the feature tables (features/sql/*.sql) in the warehouse for ``as_of``.

    ``as_of`` defaults to midnight ``holdout_days`` before the end of the clean data.
    """
    settings = Settings()
    paths = _paths(settings)
    as_of = as_of or stages.default_as_of(paths, settings.holdout_days)
    return features_task(
        paths, as_of=as_of, holdout_days=settings.holdout_days, top_k=settings.top_k
    )


@flow(name="train")
def train_flow(as_of: datetime, params: LightFMParams | None = None) -> stages.TrainReport:
    """Train LightFM on the feature tables, evaluate against the popularity baseline and the
    champion on the holdout, log to MLflow and promote the winner (alias ``champion``)."""
    settings = Settings()
    params = params or LightFMParams(num_threads=settings.num_threads)
    report = train_task(
        _paths(settings), _tracking(settings), params=params, k=settings.top_k,
        run_id=_run_id(), as_of=as_of,
    )  # fmt: skip
    get_run_logger().info("model version %s: %s", report.model_version, report.decision)
    return report


@flow(name="score")
def score_flow() -> stages.ScoreReport:
    """Top-K lists for every user with the ``@champion`` model (popularity if there is none)."""
    settings = Settings()
    now = _now()
    return score_task(
        _paths(settings), _tracking(settings), k=settings.top_k, run_id=_run_id(),
        seen_before=now, generated_at=now, ttl=timedelta(hours=settings.recs_ttl_hours),
        num_threads=settings.num_threads,
    )  # fmt: skip


@flow(name="publish")
def publish_flow(recommendations: Path | None = None) -> stages.PublishReport:
    """Swap the scored lists into the serving store atomically (default: the latest scored)."""
    settings = Settings()
    paths = _paths(settings)
    return publish_task(
        paths, recommendations=recommendations or stages.latest_recommendations(paths),
        k=settings.top_k, clock=_now,
    )  # fmt: skip


release_task = task(name="release-quarantine")(stages.release_quarantine)


@flow(name="release-quarantine")
def release_flow(reasons: list[str] | None = None) -> stages.ReleaseReport:
    """Re-validate quarantined rows after a fix (say, missing items added to the catalog and
    extracted) and release the ones that now pass into the clean zone; the next nightly run
    trains on them. ``reasons`` limits it to some quarantine reasons."""
    settings = Settings()
    now = _now()
    report = release_task(
        _paths(settings), run_id=_run_id(),
        window_end=now + timedelta(minutes=settings.clock_skew_minutes), released_at=now,
        reasons=reasons,
    )  # fmt: skip
    get_run_logger().info(
        "released %d of %d quarantined rows; still quarantined: %s",
        report.rows_released, report.rows_checked, report.still_quarantined_by_reason,
    )  # fmt: skip
    return report


def _summary(reports: dict[str, Any]) -> str:
    lines = ["# Nightly recommendations", ""]
    for stage, report in reports.items():
        fields = asdict(report)
        if isinstance(report, stages.ExtractReport):
            # Totals first; the per-source detail stays in the `extractions` table.
            fields = {
                "rows_read": report.rows_read, "rows_written": report.rows_written,
                "rows_rejected": report.rows_rejected,
                "rejected_by_reason": report.rejected_by_reason,
                "files_skipped": report.files_skipped, "partition_files": len(report.units),
                "n_users": report.n_users, "n_items": report.n_items,
            }  # fmt: skip
        elif isinstance(report, stages.ValidateReport):
            fields["units"] = len(report.units)
        lines += [f"## {stage}", "", "| field | value |", "|---|---|"]
        for key, value in fields.items():
            if isinstance(value, float):
                value = f"{value:.4f}"
            lines.append(f"| {key} | {value} |")
        lines.append("")
    return "\n".join(lines)


@flow(name="nightly-recommendations", log_prints=True)
def nightly_flow(
    as_of: datetime | None = None,
    force_extract: bool = False,
    params: LightFMParams | None = None,
    since: date | None = None,
    until: date | None = None,
) -> dict[str, Any]:
    """The nightly run: extract -> validate -> features -> train -> score -> publish.

    Args:
        as_of: training sees only events before it, evaluation the ``holdout_days`` after it.
            Default: midnight ``holdout_days`` before the end of the clean data.
        force_extract: re-extract landing files even if their checksum is unchanged.
        params: LightFM hyperparameters (default: ``LightFMParams()`` on ``num_threads`` threads).
        since: backfill: re-extract data from this date (inclusive).
        until: backfill: re-extract data up to this date (inclusive).
    """
    reports: dict[str, Any] = {}
    reports["extract"] = extract_flow(force=force_extract, since=since, until=until)
    reports["validate"] = validate_flow()
    reports["features"] = features_flow(as_of=as_of)
    reports["train"] = train_flow(as_of=reports["features"].as_of, params=params)
    reports["score"] = score_flow()
    reports["publish"] = publish_flow(recommendations=reports["score"].path)
    create_markdown_artifact(
        _summary(reports), key="nightly-summary", description="Counts and metrics of the run"
    )
    return reports
