"""Train stage: evaluate candidates on the run's own window, decide, and refit what serves.

Candidates (the challenger configuration, the champion's, EASE, global popularity over several
windows and popularity within user segments) are
fitted on events before the evaluation window (the last ``holdout_days`` before ``as_of``) and
scored on the same window users, warm and cold. The gate (:func:`models.policy.
promotion_decision`) decides whether the challenger's configuration replaces the champion's;
each user segment is then served by the candidate that wins on it
(:func:`models.policy.segment_choice`); finally the serving configuration is refitted on every
event before ``as_of`` (with the epoch count early stopping chose) and registered.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import polars as pl

from features.contracts import C
from features.matrices import training_matrices
from features.signal import SignalParams
from models.base import Recommender, TrainingData
from models.baselines import (
    PopularityParams,
    PopularityRecommender,
    SegmentPopularity,
    segment_attributes,
)
from models.ease import EASEParams, EASERecommender
from models.evaluate import mean_metrics, per_user_metrics
from models.lightfm_model import LightFMRecommender, train_with_early_stopping
from models.params import LightFMParams
from models.policy import SEGMENTS, GateParams, fill_to_k, promotion_decision, segment_choice
from models.review import KS, CardFacts
from pipelines.review import (
    Reviewer,
    auc_metrics,
    epoch_done,
    fit_metric,
    names,
    record_model_run,
    record_segment_choices,
    training_inputs,
)
from pipelines.stores import Stores, warehouse
from pipelines.stores.tracking import (
    Tracking,
    champion_version,
    find_training,
    load_champion,
    log_training_run,
    set_aliases,
    training_run,
)

MODEL, BASELINE, CHAMPION, EASE = "model", "baseline", "champion", "ease"
"""Candidate names: the challenger configuration, global popularity (the configured window), the
champion's configuration, EASE refitted each run; popularity over another window is
``popular:<days>`` (``popular:all`` for all history), popularity within a user segment
``segment:<attribute>``."""

POPULARITY_WINDOWS: tuple[int | None, ...] = (7, 14, 30, 90, None)
"""Recency windows (days; None: all history) global popularity is also evaluated with."""


def popular_name(days: int | None) -> str:
    """The candidate name of global popularity over ``days``."""
    return f"popular:{'all' if days is None else days}"


@dataclass(frozen=True)
class TrainReport:
    """A training run: the decision, what serves each segment, the metrics behind both."""

    mlflow_run_id: str
    model_version: str
    serving_version: str | None  # the registered version that serves (None: popularity does)
    promoted: bool
    decision: str
    serving: dict[str, str]
    epochs: int
    metrics: dict[str, float]


@dataclass(frozen=True)
class _Window:
    """The evaluation window's users (with attributes as of its start) and truth."""

    data: TrainingData
    users: pl.DataFrame  # one row per window user: user_id, user_segment, attributes
    holdout: pl.DataFrame
    seen: pl.DataFrame
    popular: pl.DataFrame  # the global popular list for every window user (the fill)


def _window(
    stores: Stores, popularity: PopularityParams, k: int, start: datetime, schema: str
) -> _Window:
    inter, users, items, holdout = warehouse.read_tables(
        stores.warehouse, "eval_interactions", "eval_user_features", "eval_item_features",
        "holdout", schema=schema,
    )  # fmt: skip
    data = TrainingData(inter.filter(pl.col("positive")), users, items, start)
    who = holdout.select(C.user_id, "user_segment").unique().sort(C.user_id)
    window_users = who.join(users, on=C.user_id, how="left")
    seen = inter.select(C.user_id, C.item_id)
    popular = PopularityRecommender.fit(data, popularity).recommend(window_users, k, exclude=seen)
    return _Window(data, window_users, holdout, seen, popular)


def last_positive_users(holdout: pl.DataFrame) -> int:
    """Window users judged on their own latest positives before the window (``truth`` is
    ``last_positives``: :func:`pipelines.features.with_last_positives`); 0 for a holdout built
    before that column existed."""
    if "truth" not in holdout.columns:
        return 0
    return holdout.filter(pl.col("truth") == "last_positives")[C.user_id].n_unique()


MAX_STOPPING_USERS = 5_000
"""Early stopping scores each epoch on at most this many window users (a fixed sample)."""


def _sample(window: _Window, n: int) -> _Window:
    """The window restricted to a fixed pseudo-random sample of ``n`` of its users."""
    if window.users.height <= n:
        return window
    users = window.users.sort(pl.col(C.user_id).hash(seed=0)).head(n).sort(C.user_id)
    keep = pl.col(C.user_id).is_in(users[C.user_id].implode())
    return _Window(
        window.data, users, window.holdout.filter(keep), window.seen, window.popular.filter(keep)
    )


def _as_served(model: Recommender, window: _Window, k: int, num_threads: int) -> pl.DataFrame:
    """The lists the model would serve: its own for users it describes, popular for the rest
    and for the slots it cannot fill."""
    described = window.users.filter(pl.Series(model.describes(window.users)))
    recs = model.recommend(described, k, exclude=window.seen, num_threads=num_threads)
    return fill_to_k(recs, window.popular, k)


def _scored(name: str, recs: pl.DataFrame, window: _Window, k: int) -> pl.DataFrame:
    per_user = per_user_metrics(recs, window.holdout, k)
    return per_user.join(
        window.users.select(C.user_id, "user_segment"), on=C.user_id, how="left"
    ).with_columns(candidate=pl.lit(name))


def _same_config(a: LightFMParams, b: LightFMParams, epochs: bool = False) -> bool:
    """The same fit, threads and early stopping aside; ``epochs``: the epoch count too."""
    ignore = {"num_threads", "patience"} | (set() if epochs else {"epochs"})
    return a.model_dump(exclude=ignore) == b.model_dump(exclude=ignore)


def _metrics(per_user: pl.DataFrame, k: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for (name,), rows in per_user.group_by("candidate", maintain_order=True):
        tag = str(name).replace(":", "_")
        out.update({f"{tag}_{m}": v for m, v in mean_metrics(rows, k).items()})
        for segment in SEGMENTS:
            part = rows.filter(pl.col("user_segment") == segment)
            out.update({f"{tag}_{segment}_{m}": v for m, v in mean_metrics(part, k).items()})
    return out


def train(
    stores: Stores,
    tracking: Tracking,
    *,
    params: LightFMParams,
    signal: SignalParams,
    popularity: PopularityParams,
    ease: EASEParams,
    gate: GateParams,
    k: int,
    run_id: str,
    as_of: datetime,
    window_start: datetime,
    serve: bool = True,
    features_schema: str = warehouse.LATEST,
    manifest: str | None = None,
    run_url: str | None = None,
) -> TrainReport:
    """Evaluate, decide, refit and register (module docstring). With ``serve`` the refit
    becomes ``@champion``; a backfill of a past night passes False (its refit is registered,
    and used by its own scoring, but tonight's champion keeps the alias).

    One MLflow run spans it all (tags: the flow run and its ``run_url``, the data window, the
    input manifests); each epoch's validation metric is a step metric, and the run's
    ``review/`` artifacts hold the plots and the model card (:mod:`pipelines.review`), which is
    also the registered version's description. Every decision is a row in ``model_runs``.

    ``manifest`` (the feature tables' content, :func:`pipelines.features.content_manifest`)
    with the configuration and the timeline makes the run's input manifest (MLflow tag
    ``input_manifest``). When a finished training had the same one and its decision still
    holds (its version is ``@champion``, or it was not promoted and the champion it kept still
    is; or ``serve`` is False), nothing is trained: its version, plan and metrics are reused,
    and the decision says so.

    Raises:
        ValueError: there are no positive interactions before the window or before ``as_of``.
    """
    warehouse.require_features_for(stores.warehouse, as_of, features_schema)
    inputs = _input_manifest(
        manifest, as_of=as_of, window_start=window_start, k=k,
        params=params.model_dump(exclude={"num_threads"}), signal=signal.model_dump(),
        popularity=popularity.model_dump(), ease=ease.model_dump(), gate=gate.model_dump(),
    )  # fmt: skip
    reused = _reuse(stores, tracking, inputs, serve) if inputs else None
    if reused is not None:
        return reused
    tags = {
        "flow_run_id": run_id,
        "as_of": as_of.isoformat(),
        "window_start": window_start.isoformat(),
        "input_manifest": inputs or "none",
        "features_manifest": manifest or "none",
        "features_schema": features_schema,
        **({"prefect_flow_run_url": run_url} if run_url else {}),
    }
    # The MLflow run spans the whole training: its duration is the training's.
    with (
        training_run(tracking, f"nightly-{as_of:%Y-%m-%d}", tags),
        tempfile.TemporaryDirectory() as review_dir,
    ):
        return _evaluate_decide_refit(
            stores, tracking, params=params, signal=signal, popularity=popularity, ease=ease,
            gate=gate, k=k, run_id=run_id, as_of=as_of, window_start=window_start, serve=serve,
            features_schema=features_schema, tags=tags, review_dir=Path(review_dir),
        )  # fmt: skip


def _evaluate_decide_refit(
    stores: Stores,
    tracking: Tracking,
    *,
    params: LightFMParams,
    signal: SignalParams,
    popularity: PopularityParams,
    ease: EASEParams,
    gate: GateParams,
    k: int,
    run_id: str,
    as_of: datetime,
    window_start: datetime,
    serve: bool,
    features_schema: str,
    tags: dict[str, str],
    review_dir: Path,
) -> TrainReport:
    window = _window(stores, popularity, k, window_start, features_schema)
    if window.data.interactions.height == 0:
        raise ValueError(
            f"no positive interactions before the evaluation window ({window_start.isoformat()});"
            " nothing to train on: lower RECS_HOLDOUT_DAYS or load more history"
        )
    fit_curve: list[float] = []
    threads = params.num_threads
    matrices = training_matrices(window.data.interactions, window.data.users, window.data.items)
    champion = load_champion(tracking)
    champion_params = getattr(champion.recommender, "params", None) if champion else None
    # The champion's configuration differs from the challenger's in its epoch count only, as
    # a rule (early stopping chose it another night): then it is the challenger's training
    # at that epoch, not a second fit from scratch (~140 s of a ``large`` training).
    champion_epoch = (
        champion_params.epochs
        if isinstance(champion_params, LightFMParams) and _same_config(champion_params, params)
        else None
    )
    stopped = None
    if window.users.height:
        sample = _sample(window, MAX_STOPPING_USERS)
        stopped = train_with_early_stopping(
            matrices,
            params,
            lambda m: mean_metrics(
                per_user_metrics(_as_served(m, sample, k, threads), sample.holdout, k), k
            )[f"precision_at_{k}"],
            on_epoch=lambda epoch, value, fit: fit_curve.append(epoch_done(epoch, value, fit, k)),
            fit_metric=fit_metric(window.data, k, threads),
            also_epoch=champion_epoch,
        )
        challenger, epochs, curve = stopped.model, stopped.epochs, stopped.curve
    else:
        challenger, epochs, curve = (
            LightFMRecommender.from_matrices(matrices, params),
            params.epochs,
            [],
        )
    chosen = challenger.params
    frames = [
        _scored(MODEL, _as_served(challenger, window, k, threads), window, k),
        _scored(BASELINE, window.popular, window, k),
    ]
    windows = [d for d in POPULARITY_WINDOWS if d != popularity.window_days]
    reviewer = Reviewer(window.holdout, window.users, window.data, k)
    fitted: dict[str, PopularityRecommender | SegmentPopularity] = {
        BASELINE: PopularityRecommender.fit(window.data, popularity)
    }
    for days in windows:
        other = PopularityParams(window_days=days)
        fitted[popular_name(days)] = PopularityRecommender.fit(window.data, other)
    segments = [popular_name(d) for d in windows]
    segments += [f"segment:{a}" for a in segment_attributes(window.data.users)]
    for name in segments[len(windows) :]:
        fitted[name] = SegmentPopularity.fit(window.data, popularity, name.split(":", 1)[1])
    for name in segments:
        # As long as the review's longest cut-off: the gate reads their top k, the review
        # every k; then they are dropped (one candidate's lists held at a time).
        recs = fitted[name].recommend(window.users, max(KS), exclude=window.seen)
        frames.append(_scored(name, recs, window, k))
        reviewer.add(name.replace(":", "_"), recs)
        del recs
    others = list(segments)
    item_model = None
    if window.data.items.height <= ease.max_items:
        item_model = EASERecommender.fit(window.data, ease)
        frames.append(_scored(EASE, _as_served(item_model, window, k, threads), window, k))
        others.append(EASE)
    champion_model: LightFMRecommender | None = None
    if isinstance(champion_params, LightFMParams):
        if _same_config(champion_params, chosen, epochs=True):
            champion_model = challenger
        elif stopped is not None and stopped.at_epoch is not None:
            champion_model = stopped.at_epoch
        else:
            champion_model = LightFMRecommender.from_matrices(
                matrices, champion_params.model_copy(update={"num_threads": threads})
            )
        frames.append(_scored(CHAMPION, _as_served(champion_model, window, k, threads), window, k))
    per_user = pl.concat(frames, how="vertical_relaxed")
    references = [BASELINE, *segments] + (
        [CHAMPION] if isinstance(champion_params, LightFMParams) else []
    )
    decision = promotion_decision(per_user, MODEL, references, gate)
    if decision.promote:
        serving_params: LightFMParams | None = chosen
    elif isinstance(champion_params, LightFMParams):
        serving_params = champion_params.model_copy(update={"num_threads": threads})
    else:
        serving_params = None
    serving_name = MODEL if decision.promote else CHAMPION
    candidates = [BASELINE, *others] + ([serving_name] if serving_params else [])
    won = segment_choice(per_user, candidates, gate)  # by candidate, for the metrics behind it
    serving = {s: (MODEL if c == serving_name else c) for s, c in won.items()}
    interactions, users, items = warehouse.read_tables(
        stores.warehouse, "interactions", "user_features", "item_features", schema=features_schema
    )
    full = TrainingData(interactions.filter(pl.col("positive")), users, items, as_of)
    if full.interactions.height == 0:
        raise ValueError(f"no positive interactions before as_of={as_of.isoformat()}")
    refit_params = (serving_params or chosen).model_copy(update={"patience": None})
    refit = LightFMRecommender.fit(full, refit_params)
    volumes = {"users": users.height, "items": items.height, "interactions": interactions.height}
    del interactions, users, items, full  # the review's lists need the room
    metrics = _metrics(per_user, k)
    long_popular = fitted[BASELINE].recommend(window.users, max(KS), exclude=window.seen)
    models = {MODEL: challenger, CHAMPION: champion_model}
    tags = {**tags, **training_inputs(stores, review_dir)}
    reviewer.add_served(
        {**models, EASE: item_model}, long_popular, window.users, window.seen, threads
    )
    del long_popular
    last_users = last_positive_users(window.holdout)
    review = reviewer.write(
        review_dir,
        extra=auc_metrics(
            {**models, EASE: item_model, **fitted}, window.users, window.holdout, window.seen
        ),
        fit_curve=fit_curve, curve=curve,
        best_epoch=epochs, item_embeddings=(refit.item_ids, refit.item_embeddings),
        facts=CardFacts(
            name=tracking.model_name, as_of=f"{as_of:%Y-%m-%d %H:%M:%S} UTC",
            window_start=f"{window_start:%Y-%m-%d %H:%M:%S} UTC",
            volumes={**volumes, "window users": window.users.height,
                     "window liked pairs": window.holdout.height,
                     "warm users judged on their latest positives": last_users},
            features={"users": refit.user_attributes(), "items": names(matrices.item_vocabulary)},
            params=refit_params.model_dump(), promoted=decision.promote,
            reasons=decision.reasons, serving=serving, serves=serve and serving_params is not None,
        ),
    )  # fmt: skip
    metrics.update(review.metrics)
    logged = log_training_run(
        tracking,
        refit,
        run_name=f"nightly-{as_of:%Y-%m-%d}",
        params={
            **{f"lightfm_{k_}": v for k_, v in refit_params.model_dump().items()},
            # The params model whole: LightFMParams.model_validate_json rebuilds the model.
            "lightfm_params": refit_params.model_dump_json(),
            **{f"signal_{k_}": v for k_, v in signal.model_dump().items()},
            **{f"gate_{k_}": v for k_, v in gate.model_dump().items()},
            **{f"ease_{k_}": v for k_, v in ease.model_dump().items()},
            "popularity_window_days": popularity.window_days,
            "as_of": as_of.isoformat(),
            "window_start": window_start.isoformat(),
            "k": k,
            "epochs_chosen": epochs,
            "n_users": volumes["users"],
            "n_items": volumes["items"],
            "n_interactions": volumes["interactions"],
            "n_holdout_pairs": window.holdout.height,
            "n_last_positive_users": last_users,
        },
        metrics=metrics,
        tags={
            **tags,
            "decision": decision.reason,
            "champion_version": champion.version if champion else "none",
            "serves_model": str(serving_params is not None).lower(),
            **{f"serve_{s}": c for s, c in serving.items()},
        },
        promote=serve and serving_params is not None,
        artifacts=review_dir,
        description=review.card,
        propose=serve,
    )
    # The commit: the warehouse rows in one transaction; the aliases then (a kill in between
    # is rolled forward by pipelines.stores.tracking.finish_abandoned_runs, a kill before it
    # rolled back: the version registered without aliases is deleted).
    with warehouse.connect(stores.warehouse) as con, warehouse.transaction(con):
        record_segment_choices(con, run_id, logged.version, as_of, serving, won, metrics, k)
        record_model_run(
            con, logged.run_id, logged.version, run_id, as_of, decision.promote,
            decision.reason, serving, metrics, k, epochs,
        )  # fmt: skip
    set_aliases(tracking, logged.version, propose=serve, promote=logged.promoted)
    return TrainReport(
        logged.run_id, logged.version, logged.version if serving_params else None,
        decision.promote, decision.reason, serving, epochs, metrics,
    )  # fmt: skip


def _input_manifest(manifest: str | None, **config: object) -> str | None:
    """What a training depends on, as one hash: the feature tables' content, the timeline and
    every setting that changes the fit or the decision (None without a features manifest)."""
    if not manifest:
        return None
    text = json.dumps({"features": manifest, **config}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _reuse(stores: Stores, tracking: Tracking, inputs: str, serve: bool) -> TrainReport | None:
    """The report of an earlier training with the same inputs whose decision still holds."""
    past = find_training(tracking, inputs)
    if past is None:
        return None
    if serve:
        try:
            current = champion_version(tracking)
        except LookupError:
            current = "none"
        # Promoted: it must still be the champion. Not promoted: the champion it lost to must
        # still be the one (the decision compared them). Else (say, a rollback since): train.
        promoted = past.tags.get("promoted") == "true"
        if current != (past.version if promoted else past.tags.get("champion_version")):
            return None
    plan = warehouse.serving_plan(stores.warehouse, model_version=past.version)
    if plan is None:
        return None
    decision = (
        f"skipped: the inputs are unchanged since training run {past.run_id} "
        f"(input_manifest {inputs[:12]}); reusing version {past.version}"
    )
    serves = past.tags.get("serves_model") == "true"
    return TrainReport(
        past.run_id, past.version, past.version if serves else None, False, decision, plan,
        int(past.params.get("epochs_chosen", "0")), past.metrics,
    )  # fmt: skip
