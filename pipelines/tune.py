"""Tune stage: an Optuna study over the LightFM hybrid's hyperparameters and the signal settings.

The protocol, fixed before any number is seen: the nightly evaluates its candidates on the last
``holdout_days`` before ``as_of``; tuning must not look there (the gate would then judge a
configuration on the data that chose it). So a study trains on the events before
``as_of - 2 * holdout_days`` and scores each epoch on the window after it, up to the nightly's
window: the truth is what the base signal calls a positive in that window (so every trial is
judged on the same pairs; with ``truth`` given, that signal defines it instead: the flow passes
the configured one, as the nightly does for its own window, so a tuned ``min_rating`` changes
what candidates learn from, never what counts as a like), the lists are as served (the model's,
topped up with the popular list), the metric is mean precision@k per window user (a fixed
sample of at most 5,000). As in the nightly, a window with fewer than ``min_warm_users`` warm
users also judges warm users on their latest positives before it
(:func:`pipelines.features.with_last_positives`).

Trial 0 is the configuration in use, so the study's best is never worse than it on this window.
Each epoch is reported to a median pruner (a trial below the median of earlier trials at the same
epoch stops); each trial is an MLflow child run of one ``tune-<as_of>`` run in the experiment
``<experiment>-tuning`` (apart from the nightly's trainings). The best configuration is a row of
the warehouse ``tuning_runs`` (versioned: one per study); the nightly uses the latest until the
next study (its gate still decides whether it replaces the champion).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import mlflow
import optuna
import polars as pl
import pyarrow as pa

from features.build import register_inputs, run_sql
from features.contracts import C
from features.matrices import training_matrices
from features.signal import SignalParams
from models.base import TrainingData
from models.baselines import PopularityParams, PopularityRecommender
from models.evaluate import mean_metrics, per_user_metrics
from models.lightfm_model import LightFMRecommender, train_with_early_stopping
from models.params import LightFMParams
from models.policy import fill_to_k
from pipelines.features import lake_inputs, with_last_positives
from pipelines.stores import Stores, warehouse
from pipelines.stores.tracking import Tracking

log = logging.getLogger(__name__)

SAMPLE_USERS = 5_000
HALF_LIVES = (0.0, 30.0, 90.0, 365.0)
"""Half-lives (days) a study tries; 0 is no decay."""


@dataclass(frozen=True)
class TuneReport:
    """One study: its window, its trials, the best configuration and the one in use before."""

    run_id: str
    mlflow_run_id: str
    as_of: datetime
    window_start: datetime
    window_end: datetime
    n_trials: int
    n_pruned: int
    n_users: int
    default_value: float
    best_value: float
    params: LightFMParams
    signal: SignalParams
    seconds: float


@dataclass(frozen=True)
class Tuned:
    """The configuration of the latest study (what the nightly uses)."""

    run_id: str
    params: LightFMParams
    signal: SignalParams


def suggest(
    trial: optuna.trial.BaseTrial, base: LightFMParams, signal: SignalParams
) -> tuple[LightFMParams, SignalParams]:
    """The search space: LightFM's capacity, step, loss and regularisation; the signal's
    positive threshold, decay and repeat cap (type weights stay as configured)."""
    params = base.model_copy(
        update={
            "no_components": trial.suggest_int("no_components", 16, 128, log=True),
            "learning_rate": trial.suggest_float("learning_rate", 0.005, 0.2, log=True),
            "loss": trial.suggest_categorical("loss", ["warp", "bpr"]),  # k-OS: no weights
            "item_alpha": trial.suggest_float("item_alpha", 1e-8, 1e-3, log=True),
            "user_alpha": trial.suggest_float("user_alpha", 1e-8, 1e-3, log=True),
            "max_sampled": trial.suggest_int("max_sampled", 5, 50, log=True),
        }
    )
    half_life = trial.suggest_categorical("half_life_days", HALF_LIVES)
    tuned = signal.model_copy(
        update={
            "min_rating": trial.suggest_categorical("min_rating", [3.0, 4.0]),
            "half_life_days": half_life or None,
            "max_repeats": trial.suggest_int("max_repeats", 1, 10),
        }
    )
    return params, tuned


def _as_trial(params: LightFMParams, signal: SignalParams) -> dict[str, Any]:
    """A configuration as the values :func:`suggest` names (to enqueue trial 0)."""
    half_life = signal.half_life_days or 0.0
    return {
        **params.model_dump(include={"no_components", "learning_rate", "item_alpha",
                                     "user_alpha", "max_sampled"}),
        "loss": params.loss if params.loss in ("warp", "bpr") else "warp",
        "half_life_days": half_life if half_life in HALF_LIVES else 0.0,
        "min_rating": signal.min_rating if signal.min_rating in (3.0, 4.0) else 4.0,
        "max_repeats": min(max(signal.max_repeats, 1), 10),
    }  # fmt: skip


class _Window:
    """The study's tables, computed once from the lake (the interactions once per signal)."""

    def __init__(
        self,
        stores: Stores,
        start: datetime,
        end: datetime,
        signal: SignalParams,
        k: int,
        min_warm_users: int = 0,
        judged_by: SignalParams | None = None,
    ) -> None:
        self.start = start
        self.con = duckdb.connect()
        register_inputs(self.con, **lake_inputs(stores, end))
        sql = signal.sql_params()
        judged = (judged_by or signal).sql_params()
        # As the nightly's window: a thin one also judges warm users on their latest positives
        # before it, and every table below is then built without those pairs.
        truth, self.last_positive_users = with_last_positives(
            self.con, run_sql(self.con, "holdout", start=start, end=end, **judged), start, end,
            judged, min_warm_users,
        )  # fmt: skip
        self.truth = _frame(truth)
        self.users = _frame(run_sql(self.con, "user_features", as_of=start, **sql))
        self.items = _frame(run_sql(self.con, "item_features", as_of=start, **sql))
        self._interactions: dict[str, pl.DataFrame] = {}
        base = self.interactions(signal)
        self.seen = base.select(C.user_id, C.item_id)
        who = self.truth.select(C.user_id).unique()
        who = who.sort(pl.col(C.user_id).hash(seed=0)).head(SAMPLE_USERS).sort(C.user_id)
        self.window_users = who.join(self.users, on=C.user_id, how="left")
        self.truth = self.truth.filter(pl.col(C.user_id).is_in(who[C.user_id].implode()))
        data = self.data(signal)
        self.popular = PopularityRecommender.fit(data, PopularityParams()).recommend(
            self.window_users, k, exclude=self.seen
        )

    def interactions(self, signal: SignalParams) -> pl.DataFrame:
        key = signal.model_dump_json()
        if key not in self._interactions:
            table = run_sql(self.con, "interactions", as_of=self.start, **signal.sql_params())
            self._interactions[key] = _frame(table)
        return self._interactions[key]

    def data(self, signal: SignalParams) -> TrainingData:
        inter = self.interactions(signal).filter(pl.col("positive"))
        return TrainingData(inter, self.users, self.items, self.start)

    def precision(self, model: LightFMRecommender, k: int) -> float:
        users = self.window_users.filter(pl.Series(model.describes(self.window_users)))
        recs = model.recommend(users, k, exclude=self.seen, num_threads=model.params.num_threads)
        served = fill_to_k(recs, self.popular, k)
        return mean_metrics(per_user_metrics(served, self.truth, k), k)[f"precision_at_{k}"]


def _frame(table: pa.Table) -> pl.DataFrame:
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


def tune(
    stores: Stores,
    tracking: Tracking,
    *,
    as_of: datetime,
    holdout_days: int,
    k: int,
    base: LightFMParams,
    signal: SignalParams,
    n_trials: int,
    timeout_s: float | None,
    run_id: str,
    seed: int = 0,
    min_warm_users: int = 0,
    truth: SignalParams | None = None,
) -> TuneReport:
    """Run one study (module docstring) and record its best configuration.

    Raises:
        ValueError: the tuning window has no users or nothing to train on before it.
    """
    started = time.perf_counter()
    end = as_of - timedelta(days=holdout_days)
    start = end - timedelta(days=holdout_days)
    window = _Window(stores, start, end, signal, k, min_warm_users, truth)
    if window.window_users.height == 0 or window.data(signal).interactions.height == 0:
        raise ValueError(
            f"tuning window [{start.isoformat()}, {end.isoformat()}): no users with a positive in "
            "it, or nothing before it to train on; load more history or lower RECS_HOLDOUT_DAYS"
        )
    mlflow.set_tracking_uri(tracking.tracking_uri)
    name = f"{tracking.experiment_name}-tuning"
    experiment = mlflow.get_experiment_by_name(name)
    experiment_id = (
        experiment.experiment_id
        if experiment is not None
        else mlflow.create_experiment(name, tracking.artifacts_dir.resolve().as_uri())
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per study, below
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2),
    )
    study.enqueue_trial(_as_trial(base, signal))
    tags = {"flow_run_id": run_id, "as_of": as_of.isoformat(), "window_start": start.isoformat(),
            "window_end": end.isoformat()}  # fmt: skip

    def objective(trial: optuna.Trial) -> float:
        params, trial_signal = suggest(trial, base, signal)
        data = window.data(trial_signal)
        if data.interactions.height == 0:
            raise optuna.TrialPruned("no positives under this signal")
        matrices = training_matrices(data.interactions, data.users, data.items)
        mlflow.start_run(run_name=f"trial-{trial.number}", nested=True,
                         experiment_id=experiment_id, tags=tags)  # fmt: skip
        status = "FAILED"
        try:
            mlflow.log_params(trial.params)

            def on_epoch(epoch: int, value: float, _: float | None) -> None:
                mlflow.log_metric(f"validation_precision_at_{k}", value, step=epoch)
                trial.report(value, epoch)
                if trial.should_prune():
                    mlflow.set_tag("state", "pruned")
                    raise optuna.TrialPruned(f"epoch {epoch}: {value:.4f} below the median")

            stopped = train_with_early_stopping(
                matrices, params, lambda m: window.precision(m, k), on_epoch=on_epoch
            )
            best = max(stopped.curve)
            trial.set_user_attr("epochs", stopped.epochs)
            mlflow.log_metrics({f"best_precision_at_{k}": best, "epochs": stopped.epochs})
            mlflow.set_tag("state", "complete")
            status = "FINISHED"
            return best
        except optuna.TrialPruned:
            status = "KILLED"
            raise
        finally:
            mlflow.end_run(status=status)

    with mlflow.start_run(run_name=f"tune-{as_of:%Y-%m-%d}", experiment_id=experiment_id,
                          tags=tags) as parent:  # fmt: skip
        mlflow.log_params({"n_trials": n_trials, "timeout_s": timeout_s, "k": k, "seed": seed,
                           "holdout_days": holdout_days,
                           "last_positive_users": window.last_positive_users})  # fmt: skip
        study.optimize(
            objective, n_trials=n_trials, timeout=timeout_s, gc_after_trial=True,
            show_progress_bar=sys.stderr.isatty(),  # a bar in a terminal, none in logs
        )  # fmt: skip
        best_params, best_signal = suggest(optuna.trial.FixedTrial(study.best_params), base,
                                           signal)  # fmt: skip
        epochs = int(study.best_trial.user_attrs.get("epochs", base.epochs))
        default_value = float(study.trials[0].value or 0.0)
        pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
        mlflow.log_metrics({f"best_precision_at_{k}": study.best_value,
                            f"default_precision_at_{k}": default_value,
                            "n_trials": len(study.trials), "n_pruned": pruned})  # fmt: skip
        mlflow.log_dict(
            {"lightfm": best_params.model_dump(), "signal": best_signal.model_dump(),
             "best_epochs": epochs}, "tuned.json",
        )  # fmt: skip
        report = TuneReport(
            run_id, parent.info.run_id, as_of, start, end, len(study.trials), pruned,
            window.window_users.height, default_value, float(study.best_value), best_params,
            best_signal, time.perf_counter() - started,
        )  # fmt: skip
    window.con.close()
    _record(stores.warehouse, report)
    log.info(
        "tuned %d trials (%d pruned) on %d users: precision@%d %.4f (the configuration in use: "
        "%.4f)", report.n_trials, pruned, report.n_users, k, report.best_value, default_value,
    )  # fmt: skip
    return report


def _record(path: Path, report: TuneReport) -> None:
    row = {
        "run_id": [report.run_id],
        "mlflow_run_id": [report.mlflow_run_id],
        "as_of": pa.array([report.as_of], pa.timestamp("us", tz="UTC")),
        "window_start": pa.array([report.window_start], pa.timestamp("us", tz="UTC")),
        "window_end": pa.array([report.window_end], pa.timestamp("us", tz="UTC")),
        "n_trials": [report.n_trials],
        "n_pruned": [report.n_pruned],
        "n_users": [report.n_users],
        "default_precision": [report.default_value],
        "best_precision": [report.best_value],
        "lightfm_params": [report.params.model_dump_json()],
        "signal_params": [report.signal.model_dump_json()],
    }
    with warehouse.connect(path) as con:
        warehouse.append(con, "tuning_runs", pa.table(row))


def latest_tuning(path: Path) -> Tuned | None:
    """The configuration the latest study chose (None before any)."""
    if not path.exists():
        return None
    with warehouse.connect(path, read_only=True) as con:
        if not warehouse.table_exists(con, "tuning_runs"):
            return None
        rows = con.execute(
            "select run_id, lightfm_params, signal_params from tuning_runs "
            "order by rowid desc limit 1"
        ).fetchall()
    if not rows:
        return None
    run_id, params, signal = rows[0]
    return Tuned(
        str(run_id),
        LightFMParams.model_validate(json.loads(params)),
        SignalParams.model_validate(json.loads(signal)),
    )
