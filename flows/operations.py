"""The operator's flows beside the nightly: a backfill of a date range, retrain-only, a tuning
study, score and publish with the current champion, and a rollback to the previous champion.
Each is a deployment in ``prefect.yaml``; like the nightly, they wire stages and compute nothing.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from prefect import flow, get_run_logger, task

from flows.nightly import (
    Run,
    _extract,
    _features,
    _options,
    _publish,
    _score,
    _train,
    _validate,
    configuration,
)
from pipelines.stores.tracking import champion_version, rollback_champion
from pipelines.tune import TuneReport, tune

tune_task = task(name="tune-lightfm")(tune)


def night_as_of(day: date) -> datetime:
    """The ``as_of`` of the night after ``day``: midnight UTC at its end (every event of the day
    and none of the next)."""
    return datetime.combine(day + timedelta(days=1), time(), tzinfo=UTC)


@flow(name="backfill")
def backfill_flow(since: date, until: date, re_extract: bool = True) -> list[dict[str, Any]]:
    """Backfill the nights ``since`` .. ``until`` (inclusive): re-extract the landing data dated
    in that window (``re_extract``), validate it, then for each night build its features (in
    their own warehouse schema, the latest tables untouched), train and score as of the end of
    that day. The lists stay in the lake under this run's id; tonight's keep serving and the
    ``champion`` alias does not move.

    Returns:
        One summary per night: as_of, model version, serving plan, rows scored.
    """
    if until < since:
        raise ValueError(f"until ({until}) is before since ({since})")
    with Run.start() as run:
        if re_extract:
            _extract(run, False, since, until)
        _validate(run, None)
        nights = []
        day = since
        while day <= until:
            as_of = night_as_of(day)
            features = _features(run, as_of, backfill=True)
            train = _train(run, as_of, None, False, features.manifest)
            scored = _score(
                run, as_of, None, train.serving_version, plan_version=train.model_version,
                backfill=True,
            )  # fmt: skip
            nights.append(
                {
                    "as_of": as_of.isoformat(),
                    "model_version": train.model_version,
                    "serving": train.serving,
                    "users": scored.n_users,
                    "rows": sum(scored.rows_by_source.values()),
                    "path": str(scored.path),
                }
            )
            get_run_logger().info("backfilled %s: %s", day, nights[-1])
            day += timedelta(days=1)
        return nights


@flow(name="retrain")
def retrain_flow(as_of: datetime | None = None) -> dict[str, Any]:
    """Retrain only: features and training as of ``as_of`` (default: now), no extraction, no
    lists; the gate decides, the refit becomes ``champion``. Tonight's lists keep serving until
    the next score-and-publish or nightly."""
    with Run.start() as run:
        resolved = _resolve(run, as_of)
        # No manifest: asked to retrain, it trains even when the inputs are unchanged.
        return {"features": _features(run, resolved), "train": _train(run, resolved, None)}


@flow(name="tune")
def tune_flow(
    as_of: datetime | None = None, n_trials: int = 30, timeout_minutes: float = 60.0, seed: int = 0
) -> TuneReport:
    """An Optuna study over LightFM's hyperparameters and the signal settings, on the window
    before the nightly's own (``pipelines/tune.py``: trials are MLflow child runs, pruned per
    epoch); the best configuration is recorded in the warehouse ``tuning_runs`` and the nightly
    trains with it from then on (the gate still decides whether it replaces the champion).
    Tunes on the clean lake as it is (no extraction)."""
    with Run.start() as run:
        s = run.settings
        base, signal = configuration(run)  # a study starts from the configuration in use
        report = _options(run, tune_task)(
            s.stores(), s.tracking(), as_of=_resolve(run, as_of), holdout_days=s.holdout_days,
            k=s.top_k, base=base,
            signal=signal, n_trials=n_trials, timeout_s=timeout_minutes * 60,
            run_id=run.run_id, seed=seed, min_warm_users=s.gate.min_users, truth=s.signal,
        )  # fmt: skip
        get_run_logger().info(
            "tuned: precision@%d %.4f over %d trials (%d pruned); in use before: %.4f",
            s.top_k, report.best_value, report.n_trials, report.n_pruned, report.default_value,
        )  # fmt: skip
        return report


@flow(name="score-and-publish")
def score_and_publish_flow(as_of: datetime | None = None) -> dict[str, Any]:
    """Score every user with the current ``champion`` (and the serving plan of the run that
    registered it) as of ``as_of`` (default: now), and publish; no training."""
    with Run.start() as run:
        return _score_and_publish(run, _resolve(run, as_of))


@flow(name="rollback")
def rollback_flow(as_of: datetime | None = None) -> dict[str, Any]:
    """Move ``champion`` back to ``previous-champion`` (the version it replaced), then score and
    publish with it. The rolled-back version keeps its tags and gains ``rolled_back``."""
    with Run.start() as run:
        moved = rollback_champion(run.settings.tracking())
        get_run_logger().info("champion: version %s -> %s", moved.rolled_back, moved.version)
        return {"rollback": moved, **_score_and_publish(run, _resolve(run, as_of))}


def _resolve(run: Run, as_of: datetime | None) -> datetime:
    from flows.nightly import resolve_as_of

    return resolve_as_of(run, as_of)


def _score_and_publish(run: Run, as_of: datetime) -> dict[str, Any]:
    version = champion_version(run.settings.tracking())
    features = _features(run, as_of)
    scored = _score(run, as_of, None, version, plan_version=version)
    return {"features": features, "score": scored, "publish": _publish(run, scored.path)}
