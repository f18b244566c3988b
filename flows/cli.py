"""``recs``: the command line. It parses arguments, builds settings and calls flows; no logic."""

from __future__ import annotations

import argparse
import shutil
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from flows.runtime import configure_environment, configure_logging

STAGES = ("nightly", "extract", "validate", "features", "train", "score", "publish")


def _as_of(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recs", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="write synthetic event exports + catalogs to landing")
    gen.add_argument("--preset", choices=("tiny", "demo", "large"), default="demo")
    gen.add_argument("--seed", type=int, default=42)
    gen.add_argument(
        "--start", type=date.fromisoformat, help="first day (default: so the data ends yesterday)"
    )
    gen.add_argument("--defect-share", type=float, help="share of defective records (0.005)")

    run = sub.add_parser("run", help="run the nightly flow or one stage flow")
    run.add_argument("stage", choices=STAGES)
    run.add_argument(
        "--as-of",
        type=_as_of,
        help="ISO date/time (UTC), default now; nightly, features, train, score",
    )
    run.add_argument("--force", action="store_true", help="extract: re-read unchanged files")
    run.add_argument(
        "--no-publish",
        action="store_true",
        help="nightly: keep the lists in the lake, tonight's keep serving (a backfill)",
    )
    run.add_argument("--since", type=date.fromisoformat, help="backfill from this date (extract)")
    run.add_argument("--until", type=date.fromisoformat, help="backfill up to this date (extract)")

    imp = sub.add_parser("import", help="a public data set or a CSV export into landing")
    kinds = imp.add_subparsers(dest="kind", required=True)
    ml = kinds.add_parser("movielens", help="MovieLens 100K or 1M folder (layout auto-detected)")
    ml.add_argument("path", type=Path)
    csv = kinds.add_parser("csv", help="a CSV of events, with a column mapping")
    csv.add_argument("path", type=Path)
    csv.add_argument(
        "--mapping", type=Path, help="TOML file with the [mapping] table of a source (see README)"
    )
    csv.add_argument("--delimiter", default=",")
    csv.add_argument("--users", type=Path, help="users catalog CSV (default: ids seen)")
    csv.add_argument("--items", type=Path, help="items catalog CSV (default: ids seen)")

    rec = sub.add_parser("recommend", help="print a user's list from the serving store")
    rec.add_argument("user_id")

    quarantine = sub.add_parser("quarantine", help="rejected records by reason; release fixed ones")
    quarantine.add_argument("action", nargs="?", choices=("list", "release"), default="list")
    quarantine.add_argument("--reason", action="append", help="release: only these reasons")
    sub.add_parser("demo", help="generate data if there is none, run nightly, show the outputs")
    return parser


def _generate(args: argparse.Namespace) -> None:
    from flows.settings import Settings
    from pipelines.sources.synthetic import PRESETS, write_landing

    settings = Settings()
    preset = PRESETS[args.preset]
    start = args.start or datetime.now(UTC).date() - timedelta(days=preset.days)
    overrides: dict[str, Any] = {"seed": args.seed, "start": start}
    if args.defect_share is not None:
        overrides["defect_share"] = args.defect_share
    params = preset.model_copy(update=overrides)
    _clear_landing_events(settings.landing, settings.lake)
    result = write_landing(params, settings.landing)
    print(
        f"wrote {result.n_lines:,} event lines in {len(result.event_files)} files, "
        f"{params.n_users:,} users, {params.n_items:,} items to {settings.landing} "
        f"({params.start} .. {params.end - timedelta(days=1)}, seed {params.seed})"
    )


def _run(args: argparse.Namespace) -> Any:
    from flows import nightly

    match args.stage:
        case "nightly":
            return nightly.nightly_flow(
                as_of=args.as_of, force_extract=args.force, since=args.since, until=args.until,
                publish_lists=not args.no_publish,
            )  # fmt: skip
        case "extract":
            return nightly.extract_flow(force=args.force, since=args.since, until=args.until)
        case "validate":
            return nightly.validate_flow()
        case "features":
            return nightly.features_flow(as_of=args.as_of)
        case "train":
            return nightly.train_flow(as_of=args.as_of)
        case "score":
            return nightly.score_flow(as_of=args.as_of)
        case "publish":
            return nightly.publish_flow()
    raise AssertionError(args.stage)


def _import(args: argparse.Namespace) -> None:
    import tomllib

    from flows.settings import Settings
    from pipelines.sources.importers import import_csv, import_movielens
    from pipelines.sources.readers import ColumnMapping, FileSource

    settings = Settings()
    _clear_landing_events(settings.landing, settings.lake)
    if args.kind == "movielens":
        report = import_movielens(args.path, settings.landing)
    else:
        mapping = ColumnMapping()
        if args.mapping:
            mapping = ColumnMapping.model_validate(
                tomllib.loads(args.mapping.read_text()).get("mapping", {})
            )
        source = FileSource(
            name=args.path.name.split(".", 1)[0], format="csv", csv_delimiter=args.delimiter,
            mapping=mapping,
        )  # fmt: skip
        report = import_csv(args.path, source, settings.landing, users=args.users, items=args.items)
    print(
        f"imported {report.dataset}: {report.n_events:,} events to {report.events_file}, "
        f"{report.n_users:,} users, {report.n_items:,} items"
        + (
            f"; {report.n_rejected:,} rejected records in {settings.landing / 'rejected'}"
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


def _recommend(args: argparse.Namespace) -> int:
    from flows.settings import Settings
    from pipelines.stores.serving import ServingStore, read_recommendations

    try:
        table = read_recommendations(ServingStore(Settings().serving), args.user_id)
    except LookupError as exc:
        print(exc, file=sys.stderr)
        return 1
    rows = table.to_pylist()
    if not rows:
        print(f"no recommendations for {args.user_id!r} and no popular list", file=sys.stderr)
        return 1
    print(f"recommendations for {args.user_id} ({rows[0]['source']}):")
    print(f"{'rank':>4}  {'item_id':<12} {'score':>10}  source")
    for row in rows:
        print(f"{row['rank']:>4}  {row['item_id']:<12} {row['score']:>10.4f}  {row['source']}")
    return 0


def _quarantine() -> None:
    import polars as pl

    from flows.settings import Settings
    from pipelines.stores import warehouse

    summary = warehouse.quarantine_summary(Settings().warehouse)
    if summary is None:
        print("quarantine is empty")
        return
    print(pl.DataFrame(summary))


def _demo() -> None:
    from flows.nightly import nightly_flow
    from flows.settings import Settings
    from pipelines.extract import ExtractReport
    from pipelines.sources.readers import FileSource

    settings = Settings()
    if not FileSource().files(settings.landing / "events"):
        _generate(_parser().parse_args(["generate", "--preset", "demo"]))
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
  serving       {settings.serving}
  mlflow        {settings.tracking_uri}

next
  .venv/bin/recs recommend {sample}
  .venv/bin/recs quarantine
  .venv/bin/mlflow ui --backend-store-uri {settings.tracking_uri} --port 5000   # http://127.0.0.1:5000
  .venv/bin/prefect server start --port 4200                                    # http://127.0.0.1:4200
"""
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``recs`` command. Failures the user can act on (bad input, a failed
    validation gate, missing data) print one clear message and exit 1."""
    configure_environment()  # before Prefect or MLflow is imported
    configure_logging()
    from features.contracts import ContractError
    from pipelines.suites.runner import ValidationError

    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except (ValidationError, ContractError, FileNotFoundError, LookupError, ValueError) as exc:
        print(f"recs {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def _dispatch(args: argparse.Namespace) -> int:
    match args.command:
        case "generate":
            _generate(args)
        case "run":
            _run(args)
        case "import":
            _import(args)
        case "recommend":
            return _recommend(args)
        case "quarantine" if args.action == "release":
            from flows.nightly import release_flow

            report = release_flow(reasons=args.reason)
            print(
                f"released {report.rows_released:,} of {report.rows_checked:,} quarantined rows "
                f"into {len(report.units)} clean partition files; still quarantined: "
                f"{report.still_quarantined_by_reason}"
            )
        case "quarantine":
            _quarantine()
        case "demo":
            _demo()
    return 0


if __name__ == "__main__":
    sys.exit(main())
