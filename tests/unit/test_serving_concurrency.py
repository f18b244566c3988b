"""Readers during publishes: four reader processes (two keep a connection, two connect per
read) query the serving store while it is published ten times. None may see an error, an empty
list, a short list or a list mixing two versions."""

from __future__ import annotations

import json
import multiprocessing
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

from bench.readers import read_until_stopped
from pipelines.stores.serving import ServingStore, publish_recommendations

AT = datetime(2026, 11, 1, 3, 0, tzinfo=UTC)
USERS = [f"u{n:05d}" for n in range(3000)]
K = 20
PUBLISHES = 10


def _lists(version: int) -> pa.Table:
    """Every user's K items, named after the version, so a list mixing versions shows."""
    n = len(USERS)
    return (
        pl.DataFrame(
            {
                "user_id": [u for u in USERS for _ in range(K)],
                "rank": list(range(1, K + 1)) * n,
            }
        )
        .with_columns(
            pl.col("rank").cast(pl.Int32),
            item_id=pl.format("v{}-i{}", pl.lit(version), pl.col("rank")),
            score=1.0 / pl.col("rank"),
            source=pl.lit("model"),
            model_version=pl.lit(str(version)),
            run_id=pl.lit(f"run-{version}"),
            generated_at=pl.lit(AT).cast(pl.Datetime("us", "UTC")),
            expires_at=pl.lit(AT + timedelta(hours=36)).cast(pl.Datetime("us", "UTC")),
        )
        .to_arrow()
    )


POPULAR = pl.DataFrame(
    {"segment": ["global"], "rank": [1], "item_id": ["p1"], "score": [0.5]},
    schema_overrides={"rank": pl.Int32},
).to_arrow()


def run_readers_during_publishes(url: str, workdir: Path) -> list[dict[str, object]]:
    """Publish once, start the four readers, publish ten more times, stop them; their counts."""
    store = ServingStore(url)

    def publish(version: int) -> None:
        publish_recommendations(
            store, _lists(version), POPULAR, run_id=f"run-{version}",
            model_version=str(version), clock=lambda: AT,
        )  # fmt: skip

    publish(0)
    stop = workdir / "stop"
    context = multiprocessing.get_context("spawn")
    outs = [workdir / f"reader-{i}.json" for i in range(4)]
    readers = [
        context.Process(
            target=read_until_stopped,
            args=(url, i >= 2, str(stop), str(out), USERS, K, True),
            daemon=True,
        )
        for i, out in enumerate(outs)
    ]
    for p in readers:
        p.start()
    time.sleep(2.0)  # the readers are up and reading
    for version in range(1, PUBLISHES + 1):
        publish(version)
    time.sleep(0.5)
    stop.touch()
    for p in readers:
        p.join(60)
    return [json.loads(out.read_text()) for out in outs]


@pytest.mark.slow
@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_readers_see_one_whole_version_during_ten_publishes(
    dialect: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = (
        f"sqlite:///{tmp_path / 'serving.sqlite'}"
        if dialect == "sqlite"
        else str(request.getfixturevalue("pg_schema_url"))
    )
    results = run_readers_during_publishes(url, tmp_path)
    for i, counts in enumerate(results):
        kind = "per read" if i >= 2 else "persistent"
        assert counts["reads"], f"reader {i} ({kind}) never read"
        failures = {k: counts[k] for k in ("errors", "empty", "short", "mixed") if counts[k]}
        assert not failures, f"reader {i} ({kind}): {failures} {counts['first_error']}"
