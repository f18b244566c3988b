"""The serving store, on SQLite and on the real PostgreSQL server."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

from pipelines.stores.serving import ServingStore, publish_recommendations, read_recommendations

AT = datetime(2026, 11, 1, 3, 0, tzinfo=UTC)


def recs_table(users: list[str], k: int, *, version: str = "1", run_id: str = "r1") -> pa.Table:
    rows = [
        {
            "user_id": u,
            "rank": r,
            "item_id": f"i{r}",
            "score": 1.0 / r,
            "source": "model",
            "model_version": version,
            "run_id": run_id,
            "generated_at": AT,
            "expires_at": AT + timedelta(hours=36),
        }
        for u in users
        for r in range(1, k + 1)
    ]
    return pl.DataFrame(rows).with_columns(pl.col("rank").cast(pl.Int32)).to_arrow()


POPULAR = (
    pl.DataFrame(
        {"segment": ["global"] * 2, "rank": [1, 2], "item_id": ["p1", "p2"], "score": [9.0, 8.0]}
    )
    .with_columns(pl.col("rank").cast(pl.Int32))
    .to_arrow()
)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServingStore]:
    if request.param == "sqlite":
        yield ServingStore(f"sqlite:///{tmp_path / 'serving.sqlite'}")
        return
    # one schema per test: no clash between runs
    yield ServingStore(request.getfixturevalue("pg_schema_url"))


SIMILAR = (
    pl.DataFrame(
        {
            "item_id": ["i1", "i1"],
            "rank": [1, 2],
            "similar_item_id": ["i2", "i3"],
            "score": [0.9, 0.5],
        }
    )
    .with_columns(pl.col("rank").cast(pl.Int32))
    .to_arrow()
)


def _publish(store: ServingStore, recs: pa.Table, version: str) -> None:
    publish_recommendations(
        store, recs, POPULAR, similar_items=SIMILAR, run_id=f"run-{version}",
        model_version=version, clock=lambda: AT,
    )  # fmt: skip


def _all(store: ServingStore) -> pa.Table:
    with store.connect() as conn, conn.cursor() as cur:
        cur.execute(
            "select user_id, rank, item_id, model_version from recommendations order by 1, 2"
        )
        return cur.fetch_arrow_table()


def test_publish_then_read_by_user(store: ServingStore) -> None:
    _publish(store, recs_table(["a", "b"], 3), "1")
    got = read_recommendations(store, "b")
    assert got.column("item_id").to_pylist() == ["i1", "i2", "i3"]
    assert got.column("rank").to_pylist() == [1, 2, 3]
    assert got.column("source").to_pylist() == ["model"] * 3


def test_similar_items_are_published_with_the_lists(store: ServingStore) -> None:
    _publish(store, recs_table(["a"], 2), "1")
    with store.connect() as conn, conn.cursor() as cur:
        cur.execute("select similar_item_id from similar_items where item_id = 'i1' order by rank")
        assert cur.fetchall() == [("i2",), ("i3",)]


def test_unknown_user_reads_the_popular_list(store: ServingStore) -> None:
    _publish(store, recs_table(["a"], 2), "1")
    got = read_recommendations(store, "nobody")
    assert got.column("item_id").to_pylist() == ["p1", "p2"]
    assert set(got.column("source").to_pylist()) == {"popular"}


def test_republish_replaces_the_version_whole(store: ServingStore) -> None:
    _publish(store, recs_table(["a", "b"], 3, version="1"), "1")
    _publish(store, recs_table(["c"], 3, version="2"), "2")
    table = _all(store)
    assert set(table.column("user_id").to_pylist()) == {"c"}
    assert set(table.column("model_version").to_pylist()) == {"2"}
    with store.connect() as conn, conn.cursor() as cur:
        cur.execute("select model_version, n_users, n_rows, status from publications order by 1")
        assert cur.fetchall() == [("1", 2, 6, "published"), ("2", 1, 3, "published")]


def test_failed_publish_leaves_the_previous_version_serving(store: ServingStore) -> None:
    _publish(store, recs_table(["a"], 2, version="1"), "1")
    broken = pa.concat_tables([recs_table(["x"], 2), recs_table(["x"], 2)])  # duplicate keys
    with pytest.raises(Exception, match=r"(?i)unique|constraint|duplicate"):
        _publish(store, broken, "2")
    assert _all(store).column("model_version").to_pylist() == ["1", "1"]
    with store.connect() as conn, conn.cursor() as cur:
        if store.dialect == "sqlite":
            cur.execute("select name from sqlite_master where name like '%staging%'")
        else:
            cur.execute("select tablename from pg_tables where tablename like '%staging%'")
        assert cur.fetchall() == []


def test_reading_before_any_publish_says_what_to_run(store: ServingStore) -> None:
    with pytest.raises(LookupError, match="recs run nightly"):
        read_recommendations(store, "a")


def test_sqlite_timestamps_are_read_by_its_date_functions(tmp_path: Path) -> None:
    import sqlite3

    store = ServingStore(f"sqlite:///{tmp_path / 'serving.sqlite'}")
    _publish(store, recs_table(["a"], 2), "1")
    with sqlite3.connect(tmp_path / "serving.sqlite") as db:
        rows = db.execute(
            "select generated_at, julianday(generated_at), julianday(expires_at) "
            "from recommendations"
        ).fetchall()
        (published,) = db.execute("select julianday(published_at) from publications").fetchone()
    assert rows[0][0] == "2026-11-01T03:00:00.000000Z"
    assert rows[0][1] == pytest.approx(2461345.625)  # 2026-11-01 03:00 UTC
    assert rows[0][2] - rows[0][1] == pytest.approx(1.5)  # 36 hours later
    assert published == pytest.approx(2461345.625)
