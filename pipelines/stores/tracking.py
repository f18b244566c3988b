"""Tracking (MLflow): log a training run, register its model, and promote it by alias.

Registry stages are gone in MLflow 3; the serving model is the version with alias ``champion``.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

import models.pyfunc_entry
from models.base import Recommender
from models.pyfunc import ARTIFACT_KEY, RecommenderModel

ENTRY = Path(models.pyfunc_entry.__file__)
"""The models-from-code file MLflow logs and runs on load."""

CHAMPION = "champion"
CHALLENGER = "challenger"
"""The newest registered version, promoted or not: what the last training proposed."""
PREVIOUS = "previous-champion"
"""The version ``champion`` pointed at before its last move: what a rollback returns to."""


def model_signature(recommender: Recommender) -> ModelSignature:
    """Input: ``user_id`` plus every user attribute the model reads (optional strings), so MLflow
    passes them through to the model; output: the recommendation rows."""
    inputs: list[ColSpec | TensorSpec] = [ColSpec("string", "user_id")]
    inputs += [ColSpec("string", name, required=False) for name in recommender.user_attributes()]
    return ModelSignature(
        inputs=Schema(inputs),
        outputs=Schema(
            [
                ColSpec("string", "user_id"),
                ColSpec("integer", "rank"),
                ColSpec("string", "item_id"),
                ColSpec("double", "score"),
                ColSpec("string", "source"),
            ]
        ),
        params=ParamSchema([ParamSpec("k", "long", 10)]),
    )


@dataclass(frozen=True)
class Tracking:
    """Where runs and models go."""

    tracking_uri: str
    artifacts_dir: Path
    experiment_name: str
    model_name: str

    def activate(self) -> str:
        """Point MLflow at this store and return the experiment id (created if needed)."""
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        experiment = mlflow.get_experiment_by_name(self.experiment_name)
        if experiment is not None:
            return str(experiment.experiment_id)
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        return str(
            mlflow.create_experiment(
                self.experiment_name, artifact_location=self.artifacts_dir.resolve().as_uri()
            )
        )


@dataclass(frozen=True)
class Champion:
    """The model currently serving."""

    version: str
    run_id: str
    recommender: Recommender


def load_champion(tracking: Tracking) -> Champion | None:
    """The ``@champion`` version and its recommender, or None before the first promotion."""
    tracking.activate()
    client = MlflowClient()
    try:
        version = client.get_model_version_by_alias(tracking.model_name, CHAMPION)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise
    return _load(tracking, str(version.version), str(version.run_id))


def load_version(tracking: Tracking, version: str) -> Champion:
    """One registered version and its recommender (a backfill scores with the model its own run
    refitted, not with tonight's champion)."""
    tracking.activate()
    found = MlflowClient().get_model_version(tracking.model_name, version)
    return _load(tracking, str(found.version), str(found.run_id))


def _load(tracking: Tracking, version: str, run_id: str) -> Champion:
    # suppress_warnings: the check of logged requirements against the installed packages
    # scans every installed distribution (a second per load here) only to warn.
    model = mlflow.pyfunc.load_model(
        f"models:/{tracking.model_name}/{version}", suppress_warnings=True
    )
    python_model = model.unwrap_python_model()
    assert isinstance(python_model, RecommenderModel)
    return Champion(version, run_id, python_model.recommender)


@dataclass(frozen=True)
class LoggedModel:
    """A training run and the registered version it produced."""

    run_id: str
    version: str
    promoted: bool


@contextmanager
def training_run(tracking: Tracking, run_name: str, tags: dict[str, str]) -> Iterator[str]:
    """An MLflow run that spans a whole training (its duration is the training's): yields its
    id; ended FINISHED on exit, FAILED if the body raises (a kill leaves it RUNNING);
    :func:`finish_abandoned_runs` finalises either at the next training."""
    experiment_id = tracking.activate()
    run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags)
    try:
        yield run.info.run_id
    except BaseException:
        mlflow.end_run(status="FAILED")
        raise
    mlflow.end_run(status="FINISHED")


def log_step(key: str, value: float, step: int) -> None:
    """One point of a curve in the active run (the UI draws metrics logged with steps)."""
    mlflow.log_metric(key, value, step=step)


def log_training_run(
    tracking: Tracking,
    recommender: Recommender,
    *,
    run_name: str,
    params: dict[str, Any],
    metrics: dict[str, float],
    tags: dict[str, str],
    promote: bool,
    artifacts: Path | None = None,
    description: str | None = None,
    propose: bool = True,
) -> LoggedModel:
    """Log params, metrics, ``artifacts`` (a folder: plots, the model card) and the pyfunc
    model; register it as a new version with ``description``, without aliases (the caller
    commits the decision, then calls :func:`set_aliases`). The decision, with ``promote`` and
    ``propose``, is recorded as tags on the run and the version. Logs into the active run (see
    :func:`training_run`) when there is one, else into a run of its own."""
    experiment_id = tracking.activate()
    active = mlflow.active_run()
    with (
        nullcontext(active)
        if active is not None
        else mlflow.start_run(experiment_id=experiment_id, run_name=run_name)
    ) as run:
        if artifacts is not None:
            mlflow.log_artifacts(str(artifacts), "review")
        if description:
            mlflow.set_tag("mlflow.note.content", description)  # the run page's description
        mlflow.log_params(params)
        mlflow.log_metrics(metrics)
        mlflow.set_tags({**tags, "promoted": str(promote).lower()})
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            # The signature is given; an input example would only re-run the model at log time.
            warnings.filterwarnings("ignore", message=".*input example was not provided")
            path = recommender.save(Path(tmp) / "recommender")
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(ENTRY),
                artifacts={ARTIFACT_KEY: str(path)},
                signature=model_signature(recommender),
                # Explicit requirements: inferring them starts a subprocess and takes seconds.
                pip_requirements=["lightfm-next", "numpy", "pandas", "polars", "mlflow"],
                registered_model_name=tracking.model_name,
            )
    version = str(info.registered_model_version)
    client = MlflowClient()
    marks = {"promoted": str(promote).lower(), "proposed": str(propose).lower()}
    for key, value in {**tags, **marks}.items():
        client.set_model_version_tag(tracking.model_name, version, key, value)
    if description:
        client.update_model_version(tracking.model_name, version, description=description)
    return LoggedModel(run.info.run_id, version, promote)


def set_aliases(tracking: Tracking, version: str, *, propose: bool, promote: bool) -> None:
    """After the training's commit: alias ``version`` ``challenger`` if ``propose`` (tonight's
    proposal: a backfill's version is not), and ``champion`` if ``promote`` (the one it
    replaces becomes ``previous-champion``). Idempotent: rolling forward after a kill in here
    ends where an uninterrupted call does."""
    tracking.activate()
    client = MlflowClient()
    if propose:
        client.set_registered_model_alias(tracking.model_name, CHALLENGER, version)
    if promote:
        _move_champion(client, tracking.model_name, version)


def _alias(client: MlflowClient, model_name: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(model_name, alias).version)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def _move_champion(client: MlflowClient, model_name: str, version: str) -> None:
    before = _alias(client, model_name, CHAMPION)
    if before is not None and before != version:
        client.set_registered_model_alias(model_name, PREVIOUS, before)
    client.set_registered_model_alias(model_name, CHAMPION, version)


@dataclass(frozen=True)
class PastTraining:
    """A finished training run found by its input manifest, and the version it registered."""

    run_id: str
    version: str
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]


def find_training(tracking: Tracking, manifest: str) -> PastTraining | None:
    """The latest finished training whose tag ``input_manifest`` is ``manifest`` and that
    registered a version (None when there is none)."""
    experiment_id = tracking.activate()
    client = MlflowClient()
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.input_manifest = '{manifest}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        return None
    run = runs[0]
    versions = client.search_model_versions(f"run_id = '{run.info.run_id}'")
    if not versions:
        return None
    return PastTraining(
        run.info.run_id, str(versions[0].version), dict(run.data.tags), dict(run.data.params),
        dict(run.data.metrics),
    )  # fmt: skip


@dataclass(frozen=True)
class Debris:
    """What :func:`finish_abandoned_runs` rolled back: runs marked FAILED, versions deleted."""

    runs_failed: list[str]
    versions_deleted: list[str]


def finish_abandoned_runs(tracking: Tracking, *, by_run: str, committed: set[str]) -> Debris:
    """Finalise what a killed training left in MLflow. Called while holding the run lock, so no
    other training is live: every run not FINISHED and not finalised yet was interrupted.

    ``committed`` holds the MLflow run ids whose decision reached the warehouse
    (``model_runs``, the training's commit). Such a run is rolled forward: its version gets
    the aliases its tags ``proposed`` and ``promoted`` call for (:func:`set_aliases`) and the
    run is marked FINISHED. Any other is rolled back: marked FAILED (tag ``abandoned_by``) and
    the versions it registered are deleted (they never had an alias: aliases come after the
    commit)."""
    experiment_id = tracking.activate()
    client = MlflowClient()
    found = client.search_runs([experiment_id], filter_string="attributes.status != 'FINISHED'")
    failed, deleted = [], []
    for run in found:
        run_id = run.info.run_id
        if "finalised_by" in run.data.tags:
            continue  # finalised once already
        versions = client.search_model_versions(f"run_id = '{run_id}'")
        if run_id in committed:
            for version in versions:
                tags = version.tags
                set_aliases(
                    tracking, str(version.version), propose=tags.get("proposed") == "true",
                    promote=tags.get("promoted") == "true",
                )  # fmt: skip
            client.set_tag(run_id, "finalised_by", by_run)
            client.set_terminated(run_id, status="FINISHED")
            continue
        for version in versions:
            if not version.aliases:  # (a version of an older release may still serve)
                client.delete_model_version(version.name, version.version)
                deleted.append(str(version.version))
        client.set_tag(run_id, "abandoned_by", by_run)
        client.set_tag(run_id, "finalised_by", by_run)
        client.set_terminated(run_id, status="FAILED")
        failed.append(run_id)
    return Debris(failed, deleted)


def champion_version(tracking: Tracking) -> str:
    """The ``@champion`` version.

    Raises:
        LookupError: nothing was promoted yet.
    """
    tracking.activate()
    version = _alias(MlflowClient(), tracking.model_name, CHAMPION)
    if version is None:
        raise LookupError(f"{tracking.model_name}: no champion yet; run `recs run nightly` first")
    return version


@dataclass(frozen=True)
class Rollback:
    """``champion`` moved from ``rolled_back`` back to ``version``."""

    version: str
    rolled_back: str


def rollback_champion(tracking: Tracking) -> Rollback:
    """Move ``champion`` to ``previous-champion`` and drop that alias (a second rollback needs
    a new promotion in between); the version rolled back from is tagged ``rolled_back``.

    Raises:
        LookupError: there is no previous champion to return to.
    """
    tracking.activate()
    client = MlflowClient()
    name = tracking.model_name
    current, previous = _alias(client, name, CHAMPION), _alias(client, name, PREVIOUS)
    if current is None or previous is None:
        raise LookupError(f"{name}: no previous champion to roll back to")
    client.set_registered_model_alias(name, CHAMPION, previous)
    client.delete_registered_model_alias(name, PREVIOUS)
    client.set_model_version_tag(name, current, "rolled_back", "true")
    return Rollback(previous, current)
