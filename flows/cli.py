"""``recs``: the command line. It parses arguments, builds settings and calls flows; no logic.

Built on Typer: each command shows only its own options, a bad value names the option typed.
Nothing heavy (Prefect, GX, MLflow, LightFM) is imported until a command needs it, so
``recs --help`` answers at once.
"""

from __future__ import annotations

import re
import shutil
import sys
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from flows.cli_serving import recommend, serving_app
from flows.runtime import (
    claim_children,
    configure_environment,
    configure_logging,
    hide_console_tracebacks,
    reap_orphans,
)

app = typer.Typer(
    name="recs",
    help="The batch layer of a personalization engine: logs -> lake -> features -> model -> "
    "serving store.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
run_app = typer.Typer(help="Run the nightly flow or one stage flow.", no_args_is_help=True)
import_app = typer.Typer(
    help="A public data set or a CSV export into landing.", no_args_is_help=True
)
validate_app = typer.Typer(
    help="Ways forward for a batch that failed the gate.", no_args_is_help=True
)
model_app = typer.Typer(help="The registered model's aliases.", no_args_is_help=True)
app.add_typer(run_app, name="run")
app.add_typer(import_app, name="import")
app.add_typer(validate_app, name="validate")
app.add_typer(model_app, name="model")
app.add_typer(serving_app, name="serving")
app.command()(recommend)


def _as_of(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _date(text: str) -> date:
    return date.fromisoformat(text)


class Preset(StrEnum):
    tiny = "tiny"
    demo = "demo"
    large = "large"


AsOf = Annotated[
    datetime | None,
    typer.Option(parser=_as_of, metavar="ISO", help="the run's now (UTC), default the run start"),
]
Since = Annotated[
    date | None, typer.Option(parser=_date, metavar="DATE", help="backfill from this date")
]
Until = Annotated[
    date | None, typer.Option(parser=_date, metavar="DATE", help="backfill up to this date")
]
Force = Annotated[bool, typer.Option("--force", help="re-read landing files that are unchanged")]


@app.callback()
def _root(
    debug: Annotated[
        bool, typer.Option("--debug", help="show tracebacks under the one-line errors")
    ] = False,
) -> None:
    _STATE["debug"] = debug
    if not debug:
        hide_console_tracebacks()


_STATE: dict[str, bool] = {"debug": False}


@app.command()
def generate(
    preset: Preset = Preset.demo,
    seed: int = 42,
    start: Annotated[
        date | None,
        typer.Option(parser=_date, metavar="DATE", help="first day (default: data ends yesterday)"),
    ] = None,
    defect_share: Annotated[
        float | None, typer.Option(help="share of defective records (0.005)")
    ] = None,
) -> None:
    """Write synthetic event exports and catalogs to landing."""
    from flows.settings import Settings
    from pipelines.sources.synthetic import PRESETS, write_landing

    settings = Settings()
    params = PRESETS[preset.value]
    first = start or datetime.now(UTC).date() - timedelta(days=params.days)
    overrides: dict[str, Any] = {"seed": seed, "start": first}
    if defect_share is not None:
        overrides["defect_share"] = defect_share
    params = params.model_copy(update=overrides)
    _clear_landing_events(settings.landing, settings.lake)
    result = write_landing(params, settings.landing)
    print(
        f"wrote {result.n_lines:,} event lines in {len(result.event_files)} files, "
        f"{params.n_users:,} users, {params.n_items:,} items to {settings.landing} "
        f"({params.start} .. {params.end - timedelta(days=1)}, seed {params.seed})"
    )


@run_app.command("nightly")
def run_nightly(
    as_of: AsOf = None,
    force: Force = False,
    no_publish: Annotated[
        bool,
        typer.Option(
            "--no-publish", help="keep the lists in the lake, tonight's keep serving (a backfill)"
        ),
    ] = False,
    since: Since = None,
    until: Until = None,
) -> None:
    """The whole flow: extract, validate, features, train, score, publish."""
    from flows import nightly

    nightly.nightly_flow(
        as_of=as_of, force_extract=force, since=since, until=until, publish_lists=not no_publish
    )


@run_app.command("extract")
def run_extract(force: Force = False, since: Since = None, until: Until = None) -> None:
    """Every configured source to the raw lake (unchanged files are skipped)."""
    from flows import nightly

    nightly.extract_flow(force=force, since=since, until=until)


@run_app.command("validate")
def run_validate() -> None:
    """GX gate + quarantine for raw partition files not validated yet."""
    from flows import nightly

    nightly.validate_flow()


@run_app.command("features")
def run_features(as_of: AsOf = None) -> None:
    """Rebuild the feature tables in the warehouse for as_of."""
    from flows import nightly

    nightly.features_flow(as_of=as_of)


@run_app.command("train")
def run_train(as_of: AsOf = None) -> None:
    """Evaluate, decide, refit and log (needs `recs run features` for the same as_of)."""
    from flows import nightly

    nightly.train_flow(as_of=as_of)


@run_app.command("score")
def run_score(as_of: AsOf = None) -> None:
    """Top-K for every user, each segment served by what won it."""
    from flows import nightly

    nightly.score_flow(as_of=as_of)


@run_app.command("publish")
def run_publish() -> None:
    """Swap the latest scored lists into the serving store."""
    from flows import nightly

    nightly.publish_flow()


@import_app.command("movielens")
def import_movielens(
    path: Annotated[Path, typer.Argument(help="MovieLens 100K or 1M folder")],
) -> None:
    """MovieLens 100K or 1M folder (layout auto-detected)."""
    from flows.settings import Settings
    from pipelines.sources.importers import import_movielens as run_import

    settings = Settings()
    _clear_landing_events(settings.landing, settings.lake)
    _imported(run_import(path, settings.landing), settings.landing)


@import_app.command("csv")
def import_csv(
    path: Annotated[Path, typer.Argument(help="the CSV of events")],
    mapping: Annotated[
        Path | None, typer.Option(help="TOML file with the [mapping] table of a source")
    ] = None,
    delimiter: str = ",",
    users: Annotated[
        Path | None, typer.Option(help="users catalog CSV (default: ids seen)")
    ] = None,
    items: Annotated[
        Path | None, typer.Option(help="items catalog CSV (default: ids seen)")
    ] = None,
) -> None:
    """A CSV of events, with a column mapping."""
    import tomllib

    from flows.settings import Settings
    from pipelines.sources.importers import import_csv as run_import
    from pipelines.sources.readers import ColumnMapping, FileSource

    settings = Settings()
    _clear_landing_events(settings.landing, settings.lake)
    columns = ColumnMapping()
    if mapping:
        columns = ColumnMapping.model_validate(
            tomllib.loads(mapping.read_text()).get("mapping", {})
        )
    # The source is named after the file, as an identifier ("Export 2026.csv" -> "Export_2026").
    name = re.sub(r"[^A-Za-z0-9_]+", "_", path.name.split(".", 1)[0]).strip("_")[:64] or "csv"
    source = FileSource(name=name, format="csv", csv_delimiter=delimiter, mapping=columns)
    _imported(
        run_import(path, source, settings.landing, users=users, items=items), settings.landing
    )


def _imported(report: Any, landing: Path) -> None:
    print(
        f"imported {report.dataset}: {report.n_events:,} events to {report.events_file}, "
        f"{report.n_users:,} users, {report.n_items:,} items"
        + (
            f"; {report.n_rejected:,} rejected records in {landing / 'rejected'}"
            if report.n_rejected
            else ""
        )
    )
    print("next: recs run nightly")


def _clear_landing_events(landing: Path, lake_dir: Path) -> None:
    from pipelines.stores import lake

    # The landing folder holds one data set at a time; the lake keeps what was extracted before,
    # so say so when it has data (a new RECS_DATA_DIR or `make clean-data` starts afresh).
    shutil.rmtree(landing / "events", ignore_errors=True)
    lake_events = lake.zone_dir(lake_dir, "raw")
    if lake.units(lake_dir, "raw"):
        print(
            f"note: {lake_events} already holds extracted events; they stay in the lake. "
            "Start afresh with `make clean-data` or another RECS_DATA_DIR.",
            file=sys.stderr,
        )


class QuarantineAction(StrEnum):
    list = "list"
    release = "release"


@app.command()
def quarantine(
    action: Annotated[
        QuarantineAction, typer.Argument(help="list by reason, or release fixed rows")
    ] = QuarantineAction.list,
    reason: Annotated[
        list[str] | None, typer.Option(help="release: only this reason (repeatable)")
    ] = None,
) -> None:
    """Rejected records by reason; release fixed ones."""
    if action is QuarantineAction.release:
        from flows.nightly import release_flow

        report = release_flow(reasons=reason)
        print(
            f"released {report.rows_released:,} of {report.rows_checked:,} quarantined rows "
            f"into {len(report.units)} clean partition files; still quarantined: "
            f"{report.still_quarantined_by_reason}"
        )
        return
    import polars as pl

    from flows.settings import Settings
    from pipelines.stores import warehouse

    summary = warehouse.quarantine_summary(Settings().warehouse)
    print("quarantine is empty" if summary is None else pl.DataFrame(summary))


BatchId = Annotated[str, typer.Argument(help="the batch id the failed validation printed")]
Reason = Annotated[str, typer.Option(help="why (recorded in the warehouse batch_decisions)")]


@validate_app.command("accept")
def validate_accept(batch: BatchId, reason: Reason) -> None:
    """Let a failed batch through (its row-level defects are still quarantined), recorded."""
    _decide(batch, "accept", reason)


@validate_app.command("skip")
def validate_skip(batch: BatchId, reason: Reason) -> None:
    """Leave a failed batch in the raw zone, out of the clean one, recorded."""
    _decide(batch, "skip", reason)


def _decide(batch: str, action: Literal["accept", "skip"], reason: str) -> None:
    from flows.nightly import batch_decision_flow

    decision = batch_decision_flow(batch_id=batch, action=action, reason=reason)
    what = "accepted" if action == "accept" else "skipped"
    print(f"{what} batch {batch}: {len(decision.units)} raw files, {decision.rows:,} rows")
    if decision.validation is not None:
        v = decision.validation
        print(f"  {v.rows_clean:,} clean, {v.rows_quarantined:,} quarantined")


@app.command()
def tune(
    as_of: AsOf = None,
    trials: Annotated[int, typer.Option(min=1, help="trials in the study")] = 30,
    timeout_minutes: Annotated[float, typer.Option(min=0.1, help="stop the study after")] = 60.0,
    seed: Annotated[int, typer.Option(help="the sampler's seed")] = 0,
) -> None:
    """Tune LightFM and the signal (Optuna) on the window before the nightly's; the nightly
    trains with the best from then on (RECS_USE_TUNED)."""
    from flows.operations import tune_flow

    r = tune_flow(as_of=as_of, n_trials=trials, timeout_minutes=timeout_minutes, seed=seed)
    print(
        f"{r.n_trials} trials ({r.n_pruned} pruned) on {r.n_users:,} users of "
        f"[{r.window_start:%Y-%m-%d}, {r.window_end:%Y-%m-%d}): precision {r.best_value:.4f}, "
        f"the configuration in use {r.default_value:.4f}; MLflow run {r.mlflow_run_id}"
    )


@app.command()
def doctor() -> None:
    """Check every service the settings point at (reachable, version, permissions) and print
    a table; exits 1 when a check fails."""
    from flows.doctor import FAIL, run_checks, table
    from flows.settings import Settings

    checks = run_checks(Settings())
    print(table(checks))
    if any(c.status == FAIL for c in checks):
        raise typer.Exit(1)


@model_app.command("rollback")
def model_rollback(as_of: AsOf = None) -> None:
    """Move champion back to previous-champion, then score and publish with it."""
    from flows.operations import rollback_flow

    out = rollback_flow(as_of=as_of)
    moved, published = out["rollback"], out["publish"]
    print(
        f"champion: version {moved.rolled_back} -> {moved.version}; published "
        f"{published.n_rows:,} rows for {published.n_users:,} users"
    )


@app.command()
def demo() -> None:
    """Generate data if there is none, run nightly, show the outputs."""
    from flows.nightly import nightly_flow
    from flows.settings import Settings
    from pipelines.extract import ExtractReport
    from pipelines.sources.readers import FileSource
    from pipelines.stores.urls import redact

    settings = Settings()
    if not FileSource().files(settings.landing / "events"):
        generate(preset=Preset.demo, seed=42, start=None, defect_share=None)
    reports = nightly_flow()
    extract: ExtractReport = reports["extract"]
    validate, train, publish = reports["validate"], reports["train"], reports["publish"]
    users = sorted(settings.landing.glob("users.csv"))
    sample = "u000001"
    if users:
        with open(users[0]) as f:
            f.readline()
            sample = f.readline().split(",", 1)[0] or sample
    k = settings.top_k
    model_p = train.metrics[f"model_precision_at_{k}"]
    base_p = train.metrics[f"baseline_precision_at_{k}"]
    print(
        f"""
done. as_of {reports["features"].as_of:%Y-%m-%d}
  extracted     {extract.rows_written:,} events into {len(extract.units)} partition files, \
{extract.files_skipped} unchanged files skipped ({extract.rows_rejected:,} records quarantined)
  validated     {validate.rows_clean:,} clean, {validate.rows_quarantined:,} quarantined \
{validate.quarantined_by_reason}
  model         precision@{k} {model_p:.4f} vs popularity {base_p:.4f} on the last \
{settings.holdout_days} days; version {train.model_version} \
{"promoted" if train.promoted else "not promoted"} (the reasons: MLflow tag `decision`)
  serving       warm users: {train.serving["warm"]}, cold users: {train.serving["cold"]}
  published     {publish.n_rows:,} rows for {publish.n_users:,} users \
(model version {publish.model_version})

outputs
  lake          {settings.lake}
  warehouse     {settings.warehouse}
  serving       {redact(settings.serving)}
  mlflow        {redact(settings.tracking_uri)}

next
  .venv/bin/recs recommend {sample}
  .venv/bin/recs quarantine
  .venv/bin/mlflow ui --backend-store-uri {settings.tracking_uri} --port 5000   # http://127.0.0.1:5000
  .venv/bin/prefect server start --port 4200                                    # http://127.0.0.1:4200
"""
    )


def _user_error(exc: BaseException) -> bool:
    """Failures the user can act on (bad input, a failed gate, missing data): one line, exit 1.
    Imported here, after the fact: none of these modules is needed to print help."""
    from features.contracts import ContractError
    from pipelines.stores.runlock import RunInProgressError
    from pipelines.stores.warehouse import WarehouseBusyError
    from pipelines.suites import ValidationError

    known = (
        ValidationError, ContractError, FileNotFoundError, LookupError, ValueError,
        RunInProgressError, WarehouseBusyError,
    )  # fmt: skip
    return isinstance(exc, known)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``recs`` command. Failures the user can act on print one clear message
    and exit 1 (the traceback only with ``--debug``); usage errors name the option, exit 2."""
    configure_environment()  # before Prefect or MLflow is imported
    configure_logging()
    reaped = reap_orphans()  # what a killed `recs` left running (its Prefect server)
    if reaped:
        print(f"recs: stopped {len(reaped)} process(es) a killed run left: {reaped}",
              file=sys.stderr)  # fmt: skip
    claim_children()
    args = sys.argv[1:] if argv is None else argv
    _STATE["debug"] = False
    command = typer.main.get_command(app)
    try:
        result = command.main(args=args, prog_name="recs", standalone_mode=False)
    except typer.TyperException as exc:  # usage errors: they name the option typed
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            print(f"recs: {exc.format_message()}", file=sys.stderr)
        return exc.exit_code
    except typer.Abort:
        print("aborted", file=sys.stderr)
        return 1
    except Exception as exc:
        if _STATE["debug"]:
            raise
        words = [a for a in args if not a.startswith("-")]
        groups = (["run"], ["import"], ["validate"], ["model"], ["serving"])
        name = " ".join(words[:2] if words[:1] in groups else words[:1])
        hint = "" if _user_error(exc) else " (unexpected: `recs --debug ...` shows the traceback)"
        print(f"recs {name}: {type(exc).__name__}: {exc}{hint}", file=sys.stderr)
        return 1
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
