"""Prefect flows: one per stage, and ``nightly-recommendations`` running the stages in order.

A flow reads the settings once, the clock and its run id, then calls the stages of
:mod:`pipelines` as tasks; it computes nothing itself. The stage flows exist so a data engineer
can run or backfill one stage from the UI or ``recs run <stage>``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, ParamSpec, TypeVar

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from prefect.tasks import Task

from features.contracts import ContractError
from features.signal import SignalParams
from flows import summaries
from flows.runtime import configure_logging
from flows.settings import Settings
from models.params import LightFMParams
from pipelines.extract import ExtractReport, extract
from pipelines.features import FeaturesReport, build_features, default_as_of
from pipelines.publish import PublishReport, publish
from pipelines.release import ReleaseReport, release_quarantine
from pipelines.review import committed_trainings
from pipelines.score import ScoreReport, score
from pipelines.stores import scored
from pipelines.stores.cluster import local_cluster
from pipelines.stores.preflight import check_stores
from pipelines.stores.runlock import run_lock
from pipelines.stores.tracking import finish_abandoned_runs
from pipelines.stores.warehouse import features_schema
from pipelines.suites.runner import ValidationError
from pipelines.train import TrainReport, train
from pipelines.tune import latest_tuning
from pipelines.validate import BatchDecision, ValidateReport, decide_batch, validate

P = ParamSpec("P")
R = TypeVar("R")


def _transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry what may pass on another try (a lock held a while, a dropped connection); never
    bad data or a missing input, which fail the same way every time."""
    return not isinstance(state.data, ValidationError | ContractError | ValueError | LookupError)


extract_task = task(name="extract-landing")(extract)
validate_task = task(name="validate-events")(validate)
features_task = task(name="feature-tables")(build_features)
train_task = task(name="train-lightfm")(train)
score_task = task(name="top-k-recommendations")(score)
publish_task = task(name="publish-recommendations")(publish)
release_task = task(name="release-quarantine")(release_quarantine)
decide_task = task(name="decide-batch")(decide_batch)


@dataclass(frozen=True)
class Run:
    """What one flow run reads once: the settings, its id, and its start time. Used as
    ``with Run.start() as run:``, it holds the stores for the run (one run at a time:
    :func:`pipelines.stores.runlock.run_lock`)."""

    settings: Settings
    run_id: str
    now: datetime
    _hold: ExitStack = field(default_factory=ExitStack, compare=False, repr=False)
    _cluster: list[str] = field(default_factory=list, compare=False, repr=False)

    @classmethod
    def start(cls) -> Run:
        configure_logging()
        current = flow_run.get_id()
        settings = Settings()
        clock = settings.clock
        now = datetime.now(UTC) if clock is None else clock.astimezone(UTC)
        return cls(settings, str(current) if current else uuid.uuid4().hex, now)

    def __enter__(self) -> Run:
        stores = self.settings.stores()
        self._hold.enter_context(
            run_lock(stores.warehouse, run_id=self.run_id, started_at=self.now)
        )
        try:
            check_stores(stores, self.settings.tracking())  # fail before the first stage
            workers = self.settings.dask_local_workers
            if self.settings.dask_address:
                self._cluster.append(self.settings.dask_address)
            elif workers:  # one local cluster for the run's stages
                self._cluster.append(self._hold.enter_context(local_cluster(workers)))
        except BaseException:
            self._hold.close()
            raise
        return self

    @property
    def dask_address(self) -> str | None:
        """The scheduler the sharded stages run on (None: in the process)."""
        return self._cluster[0] if self._cluster else None

    def __exit__(self, *exc: object) -> None:
        self._hold.close()


def _ui_url() -> str | None:
    """The flow run's page in the Prefect UI, when there is a UI to link to (without a server
    URL Prefect still composes ``None/flow-runs/...``)."""
    url = flow_run.ui_url
    return url if url and url.startswith(("http://", "https://")) else None


def _now() -> datetime:
    return datetime.now(UTC)


def _options(run: Run, stage: Task[P, R]) -> Task[P, R]:
    """A stage task with the retries and timeout of the settings."""
    s = run.settings
    return stage.with_options(
        retries=s.task_retries, retry_delay_seconds=s.task_retry_delay_seconds,
        timeout_seconds=s.task_timeout_seconds, retry_condition_fn=_transient,
    )  # fmt: skip


def resolve_as_of(run: Run, as_of: datetime | None) -> datetime:
    """The run's ``as_of`` (UTC): the one given, else :func:`pipelines.features.default_as_of`."""
    if as_of is None:
        return default_as_of(run.now)
    return as_of.replace(tzinfo=UTC) if as_of.tzinfo is None else as_of.astimezone(UTC)


def _extract(run: Run, force: bool, since: date | None, until: date | None) -> ExtractReport:
    report = _options(run, extract_task)(
        run.settings.stores(), sources=run.settings.sources, run_id=run.run_id,
        ingested_at=run.now, force=force, since=since, until=until,
        dask_address=run.dask_address,
    )  # fmt: skip
    get_run_logger().info(
        "extracted %d partition files: read %d, written %d, rejected %d %s (%d unchanged files)",
        len(report.units), report.rows_read, report.rows_written, report.rows_rejected,
        report.rejected_by_reason, report.files_skipped,
    )  # fmt: skip
    return report


def _validate(run: Run, units: list[str] | None) -> ValidateReport:
    report = _options(run, validate_task)(
        run.settings.stores(), run_id=run.run_id, now=run.now, units=units,
        thresholds=run.settings.validation, dask_address=run.dask_address,
    )  # fmt: skip
    get_run_logger().info(
        "validated %d rows: %d clean, %d quarantined %s",
        report.rows_in, report.rows_clean, report.rows_quarantined, report.quarantined_by_reason,
    )  # fmt: skip
    create_markdown_artifact(
        summaries.validation(report), key="validation-summary",
        description="Expectations passed and failed, rows quarantined by reason",
    )  # fmt: skip
    return report


def configuration(run: Run) -> tuple[LightFMParams, SignalParams]:
    """The LightFM params (on the settings' threads) and the signal a run trains with: the
    latest study's when the settings say to use it, else the defaults and the settings'."""
    s = run.settings
    found = latest_tuning(s.stores().warehouse) if s.use_tuned else None
    params = found.params if found else LightFMParams()
    return params.model_copy(update={"num_threads": s.num_threads}), (
        found.signal if found else s.signal
    )


def _features(run: Run, as_of: datetime, backfill: bool = False) -> FeaturesReport:
    s = run.settings
    return _options(run, features_task)(
        s.stores(), as_of=as_of, holdout_days=s.holdout_days, top_k=s.serving_k,
        signal=configuration(run)[1],
        popularity=s.popularity, schema=features_schema(as_of, backfill=backfill),
        min_warm_users=s.gate.min_users, truth=s.signal,
    )  # fmt: skip


def _train(
    run: Run,
    as_of: datetime,
    params: LightFMParams | None,
    serve: bool = True,
    manifest: str | None = None,
) -> TrainReport:
    s = run.settings
    debris = finish_abandoned_runs(
        s.tracking(), by_run=run.run_id, committed=committed_trainings(s.stores().warehouse)
    )
    if debris.runs_failed:
        get_run_logger().warning(
            "finalised %d MLflow run(s) a killed run left RUNNING (%s); deleted versions %s",
            len(debris.runs_failed), ", ".join(debris.runs_failed), debris.versions_deleted,
        )  # fmt: skip
    default, signal = configuration(run)
    report = _options(run, train_task)(
        s.stores(), s.tracking(), params=params or default,
        signal=signal, popularity=s.popularity, ease=s.ease, gate=s.gate, k=s.top_k,
        run_id=run.run_id,
        as_of=as_of, window_start=as_of - timedelta(days=s.holdout_days), serve=serve,
        features_schema=features_schema(as_of, backfill=not serve), manifest=manifest,
        run_url=_ui_url(),
    )  # fmt: skip
    get_run_logger().info(
        "model version %s (%d epochs): %s; serving %s",
        report.model_version, report.epochs, report.decision, report.serving,
    )  # fmt: skip
    return report


def _score(
    run: Run,
    as_of: datetime,
    plan_run_id: str | None,
    model_version: str | None = None,
    plan_version: str | None = None,
    backfill: bool = False,
) -> ScoreReport:
    s = run.settings
    return _options(run, score_task)(
        s.stores(), s.tracking(), k=s.serving_k, popularity=s.popularity, ease=s.ease,
        rules=s.rules,
        run_id=run.run_id, as_of=as_of, plan_run_id=plan_run_id, model_version=model_version,
        plan_version=plan_version, features_schema=features_schema(as_of, backfill=backfill),
        generated_at=run.now, ttl=timedelta(hours=s.recs_ttl_hours), num_threads=s.num_threads,
        dask_address=run.dask_address,
    )  # fmt: skip


def _publish(run: Run, recommendations: Path | None) -> PublishReport:
    stores = run.settings.stores()
    return _options(run, publish_task)(
        stores,
        recommendations=recommendations or scored.latest_scored(stores.lake),
        clock=_now,
        keep_versions=run.settings.serving_keep_versions,
        dask_address=run.dask_address if run.settings.dask_publish else None,
    )


@flow(name="extract")
def extract_flow(
    force: bool = False, since: date | None = None, until: date | None = None
) -> ExtractReport:
    """Extract what is new in every source into the raw lake (Parquet, partitioned by event date).

    Files already extracted with the same checksum are skipped unless ``force``; database sources
    read from their watermark minus the lookback. A backfill sets ``since``/``until`` (dates,
    inclusive): files dated in the range and database rows in it are read again. Records that
    cannot be typed go to the warehouse ``quarantine`` table with a reason.
    """
    with Run.start() as run:
        return _extract(run, force, since, until)


@flow(name="validate")
def validate_flow(units: list[str] | None = None) -> ValidateReport:
    """Gate new raw parts with Great Expectations; clean rows to the clean zone, the rest to
    quarantine. Fails, naming the expectations, when the batch is bad as a whole."""
    with Run.start() as run:
        return _validate(run, units)


@flow(name="validate-decision")
def batch_decision_flow(
    batch_id: str, action: Literal["accept", "skip"], reason: str
) -> BatchDecision:
    """A way forward for a failed batch (the run id its error named), recorded with the reason in
    ``batch_decisions``: ``accept`` validates it with its table-level failures let through (the
    row rules still quarantine), ``skip`` keeps it in the raw zone, out of the clean one."""
    with Run.start() as run:
        decision = _options(run, decide_task)(
            run.settings.stores(), batch_id=batch_id, action=action, reason=reason,
            run_id=run.run_id, now=run.now, thresholds=run.settings.validation,
        )  # fmt: skip
        get_run_logger().info(
            "%s batch %s (%d files, %d rows): %s",
            action, batch_id, len(decision.units), decision.rows, reason,
        )  # fmt: skip
        return decision


@flow(name="features")
def features_flow(as_of: datetime | None = None) -> FeaturesReport:
    """Build the feature tables (features/sql/*.sql, popular_items) in the warehouse from events
    before ``as_of`` (default: now), and the evaluation tables of the ``holdout_days`` before."""
    with Run.start() as run:
        return _features(run, resolve_as_of(run, as_of))


@flow(name="train")
def train_flow(as_of: datetime | None = None, params: LightFMParams | None = None) -> TrainReport:
    """Evaluate the challenger, the champion and popularity on the window before ``as_of``
    (default: now; the feature tables must have been built for it), decide, refit the serving
    configuration on everything before ``as_of``, log it to MLflow (alias ``champion``)."""
    with Run.start() as run:
        return _train(run, resolve_as_of(run, as_of), params)


@flow(name="score")
def score_flow(as_of: datetime | None = None) -> ScoreReport:
    """Top-K lists for every user as of ``as_of`` (default: now), each segment served by what
    won it in the last training (popularity before any model)."""
    with Run.start() as run:
        return _score(run, resolve_as_of(run, as_of), None)


@flow(name="publish")
def publish_flow(recommendations: Path | None = None) -> PublishReport:
    """Swap the scored lists into the serving store atomically (default: the latest scored)."""
    with Run.start() as run:
        return _publish(run, recommendations)


@flow(name="release-quarantine")
def release_flow(reasons: list[str] | None = None) -> ReleaseReport:
    """Re-validate quarantined rows after a fix (say, missing items added to the catalog and
    extracted) and release the ones that now pass into the clean zone; the next nightly run
    trains on them. ``reasons`` limits it to some quarantine reasons."""
    with Run.start() as run:
        report = _options(run, release_task)(
            run.settings.stores(), run_id=run.run_id, now=run.now,
            thresholds=run.settings.validation, reasons=reasons,
        )  # fmt: skip
        get_run_logger().info(
            "released %d of %d quarantined rows; still quarantined: %s",
            report.rows_released, report.rows_checked, report.still_quarantined_by_reason,
        )  # fmt: skip
        return report


@flow(name="nightly-recommendations", log_prints=True)
def nightly_flow(
    as_of: datetime | None = None,
    force_extract: bool = False,
    params: LightFMParams | None = None,
    since: date | None = None,
    until: date | None = None,
    publish_lists: bool = True,
) -> dict[str, Any]:
    """The nightly run: extract -> validate -> features -> train -> score -> publish.

    Args:
        as_of: the run's "now" (default: the run's start). Every stage uses only events before
            it; candidates train before its last ``holdout_days`` and are evaluated on them; the
            serving model is refitted on everything before it. A past ``as_of`` is a backfill:
            it publishes what that night would have.
        force_extract: re-extract landing files even if their checksum is unchanged.
        params: LightFM hyperparameters (default: ``LightFMParams()`` on ``num_threads`` threads).
        since: backfill: re-extract data from this date (inclusive).
        until: backfill: re-extract data up to this date (inclusive).
        publish_lists: swap the lists into the serving store and make the refit ``@champion``
            (a backfill of a past night sets False: its lists stay in the lake under its run id,
            its model is registered without the alias, and tonight's keep serving).

    Returns:
        The stage reports by stage, and ``timings``: seconds per stage.
    """
    with Run.start() as run:
        reports: dict[str, Any] = {}
        timings: dict[str, float] = {}

        def timed(stage: str, step: Callable[[], Any]) -> None:
            start = time.perf_counter()
            try:
                reports[stage] = step()
            except Exception as exc:
                # The run's report is left in the UI even when a stage fails, naming it.
                create_markdown_artifact(
                    summaries.failed(stage, exc, reports), key="nightly-summary",
                    description=f"Failed at stage {stage}",
                )  # fmt: skip
                raise
            timings[stage] = time.perf_counter() - start

        timed("extract", lambda: _extract(run, force_extract, since, until))
        timed("validate", lambda: _validate(run, None))
        resolved = resolve_as_of(run, as_of)
        timed("features", lambda: _features(run, resolved, backfill=not publish_lists))
        timed(
            "train",
            lambda: _train(run, resolved, params, publish_lists, reports["features"].manifest),
        )

        def score_step() -> ScoreReport:
            train = reports["train"]
            return _score(
                run, resolved, None, train.serving_version, plan_version=train.model_version,
                backfill=not publish_lists,
            )  # fmt: skip

        timed("score", score_step)
        if publish_lists:
            timed("publish", lambda: _publish(run, reports["score"].path))
        create_markdown_artifact(
            summaries.nightly(reports), key="nightly-summary",
            description="Counts and metrics of the run",
        )  # fmt: skip
        return {**reports, "timings": timings}
