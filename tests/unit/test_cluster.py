"""Sharded stages on a real Dask ``LocalCluster`` of two worker processes: extraction (one
shard per landing file) and scoring (one shard per user chunk) give exactly the single-machine
lake files, quarantine and lists on the ``tiny`` preset, also when a worker dies mid-shard."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from features.signal import SignalParams
from models.baselines import PopularityParams
from models.ease import EASEParams
from models.params import LightFMParams
from models.policy import GateParams
from pipelines import score as score_module
from pipelines.extract import extract
from pipelines.features import build_features
from pipelines.publish import publish
from pipelines.score import ScoreReport, score
from pipelines.sources.readers import FileSource
from pipelines.stores import Stores, lake, scored, serving_shards, warehouse
from pipelines.stores.cluster import local_cluster
from pipelines.stores.serving_shards import parts_of
from pipelines.stores.tracking import Tracking
from pipelines.suites.events import ValidationThresholds
from pipelines.suites.runner import ValidationError, offline_data_docs
from pipelines.train import train
from pipelines.validate import ValidateReport, validate
from pipelines.validate_shards import shards_of

AT = datetime(2030, 1, 1, tzinfo=UTC)
K = 5
MARKER = "RECS_TEST_KILL_MARKER"
_original_chunk = score_module._score_chunk


def _dies_once(bundle: object, work: object) -> object:
    """The score shard, except that the first worker to run it dies (the marker remembers)."""
    marker = Path(os.environ[MARKER])
    try:  # created atomically: when both workers start a shard at once, only one dies
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        pass
    else:
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        os._exit(1)  # the worker process ends mid-shard, as a killed or lost machine would
    return _original_chunk(bundle, work)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # Workers inherit the environment when they start: the marker's path must be set first.
    marker = tmp_path_factory.mktemp("kill") / "died"
    os.environ[MARKER] = str(marker)
    with local_cluster(2) as address:
        yield address
    os.environ.pop(MARKER, None)


def _stores(root: Path, landing: Path) -> Stores:
    shutil.copytree(landing, root / "landing")
    return Stores(
        root / "landing", root / "lake", root / "wh.duckdb", f"sqlite:///{root / 'serving.db'}"
    )


def _lake_files(stores: Stores, zone: str) -> dict[str, pl.DataFrame]:
    root = lake.zone_dir(stores.lake, zone)
    return {
        str(p.relative_to(root)): pl.from_arrow(pq.read_table(p))  # type: ignore[misc]
        for p in sorted(root.rglob("*.parquet"))
    }


def _table(stores: Stores, name: str) -> pl.DataFrame:
    (frame,) = warehouse.read_tables(stores.warehouse, name)
    return frame


def test_sharded_extraction_equals_the_single_machine_one(
    tmp_path: Path, tiny_landing: Path, cluster: str
) -> None:
    single, sharded = _stores(tmp_path / "a", tiny_landing), _stores(tmp_path / "b", tiny_landing)
    one = extract(single, sources=[FileSource()], run_id="r", ingested_at=AT)
    two = extract(sharded, sources=[FileSource()], run_id="r", ingested_at=AT, dask_address=cluster)
    assert two.rows_read == one.rows_read > 0
    assert two.rejected_by_reason == one.rejected_by_reason
    assert two.rows_rejected > 0  # the preset's defects: the quarantine is compared too
    assert two.units == one.units
    a, b = _lake_files(single, "raw"), _lake_files(sharded, "raw")
    assert list(a) == list(b)
    for name in a:
        assert a[name].equals(b[name]), name
    for name in ("quarantine", "extractions"):
        assert _table(sharded, name).equals(_table(single, name)), name


def _extracted_twice(root: Path, landing: Path) -> tuple[Stores, Stores]:
    single, sharded = _stores(root / "a", landing), _stores(root / "b", landing)
    single, sharded = (replace(s, gx_root=s.lake.parent / "gx") for s in (single, sharded))
    for stores in (single, sharded):
        extract(stores, sources=[FileSource()], run_id="r", ingested_at=AT)
    return single, sharded


def _copy_ids_across_files(stores: Stores) -> list[str]:
    """Rewrite the raw zone so that ids cross files: the last raw file gets two rows of the
    first (later copies of ids first seen in another file), and a row of its own twice."""
    units = sorted(lake.units(stores.lake, "raw"))
    first = lake.read_unit(stores.lake, "raw", units[0])
    last = lake.read_unit(stores.lake, "raw", units[-1])
    copies = pa.concat_tables([last, first.slice(0, 2).cast(last.schema), last.slice(0, 1)])
    lake.write_unit(stores.lake, "raw", units[-1], copies)
    return [str(i) for i in first.column("event_id").to_pylist()[:2]]


def _validated(
    stores: Stores, address: str | None, thresholds: ValidationThresholds, shard_rows: int = 1
) -> object:
    """The validation's report (but where its Data Docs are), or the error it raised (a
    failed batch). Sharded, by default one shard per file."""
    try:
        report = validate(
            stores, run_id="v", now=AT, thresholds=thresholds, dask_address=address,
            shard_rows=shard_rows,
        )  # fmt: skip
        return replace(report, data_docs=None)
    except ValidationError as error:
        return str(error)


def _same_validation(single: Stores, sharded: Stores) -> None:
    for zone in ("raw", "clean"):
        a, b = _lake_files(single, zone), _lake_files(sharded, zone)
        assert list(a) == list(b), zone
        for name in a:
            assert a[name].equals(b[name]), (zone, name)
    for name in ("quarantine", "validation_runs"):
        assert _table(sharded, name).equals(_table(single, name)), name


def test_sharded_validation_equals_the_single_machine_one(
    tmp_path: Path, tiny_landing: Path, cluster: str
) -> None:
    single, sharded = _extracted_twice(tmp_path, tiny_landing)
    units = sorted(lake.units(single.lake, "raw"))
    shards = shards_of(single.lake, units, 2000)
    assert len(units) > len(shards) > 2  # several shards of several files
    one = _validated(single, None, ValidationThresholds())
    two = _validated(sharded, cluster, ValidationThresholds(), shard_rows=2000)
    assert isinstance(one, ValidateReport)
    assert two == one
    assert one.rows_quarantined > 0  # the preset's defects: the quarantine is compared too
    _same_validation(single, sharded)


def test_sharded_validation_finds_duplicates_across_files_and_fails_as_one_piece(
    tmp_path: Path, tiny_landing: Path, cluster: str
) -> None:
    single, sharded = _extracted_twice(tmp_path, tiny_landing)
    copied = _copy_ids_across_files(single)
    assert _copy_ids_across_files(sharded) == copied
    # Strict enough that the copies (and the preset's defects) fail the batch: the verdict,
    # counts and message are the whole batch's, though every shard saw only its own file.
    strict = ValidationThresholds(max_quarantine_share=0.0001)
    one = _validated(single, None, strict)
    two = _validated(sharded, cluster, strict)
    assert isinstance(one, str)
    assert "expect_column_values_to_be_unique on column 'event_id'" in one
    assert two == one
    _same_validation(single, sharded)
    # Let through as it is: the later copies are quarantined as duplicates on both paths.
    one = _validated(single, None, ValidationThresholds(max_quarantine_share=0.5))
    two = _validated(sharded, cluster, ValidationThresholds(max_quarantine_share=0.5))
    assert isinstance(one, ValidateReport)
    assert two == one
    _same_validation(single, sharded)
    quarantine = _table(sharded, "quarantine").filter(pl.col("reason") == "duplicate_event_id")
    assert set(copied) <= set(quarantine["event_id"].to_list())
    # The Data Docs keep the added-up verdicts as results of the same suite, pass and fail.
    assert _kept_verdicts(sharded) == _kept_verdicts(single)
    assert [ok for ok, _ in _kept_verdicts(sharded)] == [False, True]


def _kept_verdicts(stores: Stores) -> list[tuple[bool, list[tuple[str, bool, object]]]]:
    """The stored results of the events suite, oldest written first: success, and per expectation
    (type, success, unexpected count or observed value)."""
    assert stores.gx_root is not None
    found = []
    for path in (stores.gx_root / "gx" / "uncommitted" / "validations" / "new_events").rglob(
        "*.json"
    ):
        doc = json.loads(path.read_text())
        rows = [
            (r["expectation_config"]["type"], r["success"],
             r["result"].get("unexpected_count", r["result"].get("observed_value")))
            for r in doc["results"]
        ]  # fmt: skip
        found.append((path.stat().st_mtime_ns, doc["success"], rows))
    assert offline_data_docs(stores.gx_root).exists()
    return [(ok, rows) for _, ok, rows in sorted(found, key=lambda f: f[0])]


def _scored_lists(report: ScoreReport) -> pl.DataFrame:
    run = scored.read_scored(report.path)
    frame = pl.from_arrow(run.recommendations)
    assert isinstance(frame, pl.DataFrame)
    return frame.drop("run_id")


@pytest.fixture(scope="module")
def trained(
    tmp_path_factory: pytest.TempPathFactory, tiny_landing: Path
) -> tuple[Stores, Tracking, datetime]:
    root = tmp_path_factory.mktemp("score")
    stores = _stores(root, tiny_landing)
    tracking = Tracking(f"sqlite:///{root / 'mlflow.db'}", root / "artifacts", "exp", "recs")
    extract(stores, sources=[FileSource()], run_id="r", ingested_at=AT)
    validate(stores, run_id="r", now=AT, thresholds=ValidationThresholds())
    latest = lake.latest_event_ts(stores.lake)
    as_of = latest.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    features = build_features(
        stores, as_of=as_of, holdout_days=4, top_k=K, signal=SignalParams(),
        popularity=PopularityParams(),
    )  # fmt: skip
    train(
        stores, tracking, params=LightFMParams(num_threads=1), signal=SignalParams(),
        popularity=PopularityParams(), ease=EASEParams(), gate=GateParams(), k=K, run_id="t",
        as_of=as_of, window_start=as_of - timedelta(days=4), manifest=features.manifest,
    )  # fmt: skip
    return stores, tracking, as_of


def _score(
    world: tuple[Stores, Tracking, datetime], run_id: str, address: str | None
) -> ScoreReport:
    stores, tracking, as_of = world
    return score(
        stores, tracking, k=K, popularity=PopularityParams(), ease=EASEParams(), run_id=run_id,
        as_of=as_of, generated_at=AT, ttl=timedelta(hours=1), num_threads=1, chunk_users=64,
        dask_address=address,
    )  # fmt: skip


def test_sharded_scoring_equals_the_single_machine_lists(
    trained: tuple[Stores, Tracking, datetime], cluster: str
) -> None:
    one = _score(trained, "single", None)
    two = _score(trained, "sharded", cluster)
    assert one.n_users > 64 * 2  # several shards
    assert two.rows_by_source == one.rows_by_source
    assert two.model_version == one.model_version != "popularity"
    assert _scored_lists(two).equals(_scored_lists(one))


def test_a_worker_killed_mid_shard_is_retried_and_the_lists_are_the_same(
    trained: tuple[Stores, Tracking, datetime],
    cluster: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    marker = Path(os.environ[MARKER])
    marker.unlink(missing_ok=True)
    monkeypatch.setattr(score_module, "_score_chunk", _dies_once)
    survived = _score(trained, "killed", cluster)
    assert marker.exists()  # a worker did die in a shard
    monkeypatch.undo()
    reference = _score(trained, "reference", None)
    assert _scored_lists(survived).equals(_scored_lists(reference))


def _served(url: str) -> tuple[list[tuple[object, ...]], list[str]]:
    """The live lists (every column, in key order) and the store's tables."""
    import adbc_driver_postgresql.dbapi as postgresql

    with postgresql.connect(url) as conn, conn.cursor() as cur:
        cur.execute("select * from recommendations order by user_id, rank")
        rows = cur.fetchall()
        cur.execute("select tablename from pg_tables where schemaname = current_schema()")
        tables = sorted(str(t) for (t,) in cur.fetchall())
    return rows, tables


def test_sharded_publish_to_postgresql_serves_the_same_version(
    trained: tuple[Stores, Tracking, datetime],
    cluster: str,
    pg_schema_url: str,
    other_pg_schema_url: str,
) -> None:
    stores, _, _ = trained
    report = _score(trained, "published", None)
    run = scored.read_scored(report.path)
    assert run.recommendations.num_rows > 3 * 300  # several parts of 300 rows (whole groups)
    assert len(parts_of(report.path / "recommendations.parquet", 300)) > 2
    one = publish(replace(stores, serving_url=pg_schema_url), recommendations=report.path,
                  clock=lambda: AT)  # fmt: skip
    two = publish(replace(stores, serving_url=other_pg_schema_url), recommendations=report.path,
                  clock=lambda: AT, dask_address=cluster, part_rows=300)  # fmt: skip
    assert (two.n_users, two.n_rows, two.checksum) == (one.n_users, one.n_rows, one.checksum)
    rows_one, tables_one = _served(pg_schema_url)
    rows_two, tables_two = _served(other_pg_schema_url)
    assert len(rows_two) == run.recommendations.num_rows
    assert rows_two == rows_one
    assert not [t for t in tables_two if "__part" in t]  # the parts were copied and dropped
    assert len(tables_two) == len(tables_one)


def test_a_part_loaded_twice_holds_its_rows_once(
    trained: tuple[Stores, Tracking, datetime], pg_schema_url: str
) -> None:
    """A shard Dask runs again (its worker died after the commit) loads its part once."""
    import adbc_driver_postgresql.dbapi as postgresql

    report = _score(trained, "retried", None)
    path = report.path / "recommendations.parquet"
    groups = parts_of(path, 300)[0]
    shared = serving_shards._Load(pg_schema_url, path, "recommendations__v_x")
    first = serving_shards.load_part(shared, (0, groups))
    assert serving_shards.load_part(shared, (0, groups)) == first > 0
    with postgresql.connect(pg_schema_url) as conn, conn.cursor() as cur:
        cur.execute(f"select count(*) from {serving_shards.part_table('recommendations__v_x', 0)}")
        assert cur.fetchone() == (first,)


def test_kernels_on_one_thread_workers_use_one_thread(cluster: str) -> None:
    from pipelines.stores.cluster import connect, threads_per_shard

    assert threads_per_shard(None, 2) == 2  # in process: the settings' threads
    with connect(cluster) as client:
        assert threads_per_shard(client, 2) == 1  # the LocalCluster's workers have one each
        assert threads_per_shard(client, 1) == 1


def test_a_sharded_validation_that_dies_after_its_shards_staged_is_done_again_by_the_next(
    tmp_path: Path, tiny_landing: Path, cluster: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stage dies after every shard staged its clean rows, before the verdict: nothing is
    visible, and the next run removes the staged files and validates the batch again."""
    import pipelines.validate as validate_module

    single, sharded = _extracted_twice(tmp_path, tiny_landing)

    def dies(*args: object, **kwargs: object) -> object:
        raise RuntimeError("killed between the shards and the verdict")

    monkeypatch.setattr(validate_module, "gate", dies)
    with pytest.raises(RuntimeError, match="killed"):
        _validated(sharded, cluster, ValidationThresholds(), shard_rows=2000)
    clean = lake.zone_dir(sharded.lake, "clean")
    assert list(clean.rglob(f"*{lake.STAGED}"))  # the shards' staged files are left behind
    assert not list(clean.rglob("*.parquet"))  # but nothing reached the clean zone
    monkeypatch.undo()
    one = _validated(single, None, ValidationThresholds())
    two = _validated(sharded, cluster, ValidationThresholds(), shard_rows=2000)
    assert two == one
    assert not list(clean.rglob(f"*{lake.STAGED}"))
    _same_validation(single, sharded)
