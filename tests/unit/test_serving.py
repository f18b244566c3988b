"""The serving store, on SQLite and on the real PostgreSQL server."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pytest

from features.contracts import RECOMMENDATIONS
from pipelines.stores.reader import ServingReader, ServingUnavailableError, get_recommendations
from pipelines.stores.serving import ServingStore, publish_recommendations, rollback, versions

AT = datetime(2026, 11, 1, 3, 0, tzinfo=UTC)


def recs_table(
    users: list[str], k: int, *, version: str = "1", run_id: str | None = None
) -> pa.Table:
    rows = [
        {
            "user_id": u,
            "rank": r,
            "item_id": f"i{r}",
            "score": 1.0 / r,
            "source": "model",
            "model_version": version,
            "run_id": run_id or f"run-{version}",
            "generated_at": AT,
            "expires_at": AT + timedelta(hours=36),
        }
        for u in users
        for r in range(1, k + 1)
    ]
    return pl.DataFrame(rows).with_columns(pl.col("rank").cast(pl.Int32)).to_arrow()


POPULAR = (
    pl.DataFrame(
        {
            "segment": ["global", "global", "gender:F"],
            "rank": [1, 2, 1],
            "item_id": ["p1", "p2", "f1"],
            "score": [0.9, 0.8, 0.7],
        }
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
    got = get_recommendations(store.url, "b", k=10)
    assert [r.item_id for r in got] == ["i1", "i2", "i3"]
    assert [r.rank for r in got] == [1, 2, 3]
    assert [r.source for r in got] == ["model"] * 3
    assert [r.item_id for r in get_recommendations(store.url, "b", k=2)] == ["i1", "i2"]


def test_similar_items_are_published_with_the_lists(store: ServingStore) -> None:
    _publish(store, recs_table(["a"], 2), "1")
    with store.connect() as conn, conn.cursor() as cur:
        cur.execute("select similar_item_id from similar_items where item_id = 'i1' order by rank")
        assert cur.fetchall() == [("i2",), ("i3",)]


def test_unknown_user_reads_the_popular_list_of_their_segment(store: ServingStore) -> None:
    _publish(store, recs_table(["a"], 2), "1")
    got = get_recommendations(store.url, "nobody")
    assert [(r.item_id, r.score, r.source) for r in got] == [
        ("p1", 0.9, "popular"),
        ("p2", 0.8, "popular"),
    ]
    by_segment = get_recommendations(store.url, "nobody", attributes={"gender": "F"})
    assert [r.item_id for r in by_segment] == ["f1"]
    unknown_segment = get_recommendations(store.url, "nobody", attributes={"gender": "X"})
    assert [r.item_id for r in unknown_segment] == ["p1", "p2"]


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
    twice = recs_table(["x"], 2, version="2")
    broken = pa.concat_tables([twice, twice])  # duplicate keys
    with pytest.raises(Exception, match=r"(?i)unique|constraint|duplicate"):
        _publish(store, broken, "2")
    assert _all(store).column("model_version").to_pylist() == ["1", "1"]
    assert len(_tables(store, "%\\_\\_v\\_%")) == 3  # version 1's three tables, no debris


def test_a_publish_serves_one_run_and_its_constants_from_the_view(store: ServingStore) -> None:
    mixed = pa.concat_tables([recs_table(["a"], 2, version="1"), recs_table(["b"], 2, version="2")])
    with pytest.raises(ValueError, match="column model_version holds 2 values"):
        _publish(store, mixed, "1")
    other_run = recs_table(["a"], 2, version="1", run_id="someone-else")
    with pytest.raises(ValueError, match="column run_id is 'someone-else'; expected 'run-1'"):
        _publish(store, other_run, "1")
    _publish(store, recs_table(["a"], 2, version="1"), "1")
    with store.connect() as conn, conn.cursor() as cur:
        cur.execute("select * from recommendations order by rank")
        served = cur.fetch_arrow_table()
        cur.execute("select * from recommendations__v_" + _live_version(store))
        stored = cur.fetch_arrow_table()
    assert served.column_names == RECOMMENDATIONS.names
    assert stored.column_names == ["user_id", "rank", "item_id", "score", "source"]
    row = served.to_pylist()[1]
    assert (row["model_version"], row["run_id"], row["item_id"]) == ("1", "run-1", "i2")
    expires = row["expires_at"]
    if store.dialect == "sqlite":
        assert expires == "2026-11-02T15:00:00.000000Z"
    else:
        assert expires == AT + timedelta(hours=36)
    quoted = "it's-2"  # a literal of the view: its quote doubled, not an injection
    publish_recommendations(
        store, recs_table(["a"], 2, version="2", run_id=quoted), POPULAR, run_id=quoted,
        model_version="2", clock=lambda: AT,
    )  # fmt: skip
    with store.connect() as conn, conn.cursor() as cur:
        cur.execute("select distinct run_id, model_version from recommendations")
        assert cur.fetchall() == [(quoted, "2")]


def test_a_version_loaded_with_its_constants_in_the_rows_can_still_be_rolled_back_to(
    store: ServingStore,
) -> None:
    """Stores published before the constants moved to the view keep such versions."""
    from pipelines.stores.serving import _ts

    _publish(store, recs_table(["a"], 2, version="1"), "1")
    legacy = "0123456789ab"
    kinds = {"sqlite": ("integer", "text"), "postgresql": ("integer", "timestamptz")}
    integer, ts = kinds[store.dialect]
    p = [store.param(n) for n in range(1, 4)]
    with store.connect() as conn, conn.cursor() as cur:
        for name in ("popular_items", "similar_items"):
            cur.execute(f"create table {name}__v_{legacy} as select * from {name}")
        cur.execute(
            f"create table recommendations__v_{legacy} (user_id text, rank {integer}, "
            "item_id text, score double precision, source text, model_version text, "
            f"run_id text, generated_at {ts}, expires_at {ts})"
        )
        cur.execute(
            f"insert into recommendations__v_{legacy} values ('a', 1, 'old', 1.0, 'model', "
            f"'0', 'run-0', {p[0]}, {p[1]})",
            (_ts(store, AT), _ts(store, AT)),
        )
        cur.execute(
            "insert into publications (run_id, model_version, n_users, n_rows, checksum, "
            f"status, started_at, version, seq) values ('run-0', '0', 1, 1, 'c', 'published', "
            f"{p[0]}, {p[1]}, 0)",
            (_ts(store, AT), legacy),
        )
        conn.commit()
    rollback(store, "run-0", clock=lambda: AT)
    with store.connect() as conn, conn.cursor() as cur:
        cur.execute("select item_id, model_version, generated_at from recommendations")
        assert cur.fetchall() == [("old", "0", _ts(store, AT))]  # the rows' own constants
    rollback(store, "run-1", clock=lambda: AT)
    assert _all(store).column("model_version").to_pylist() == ["1", "1"]


def _live_version(store: ServingStore) -> str:
    (live,) = [v for v in versions(store) if v.live]
    return live.version


def _tables(store: ServingStore, like: str) -> list[str]:
    with store.connect() as conn, conn.cursor() as cur:
        if store.dialect == "sqlite":
            cur.execute(
                f"select name from sqlite_master where type = 'table' and name like '{like}' "
                "escape '\\' order by 1"
            )
        else:
            cur.execute(
                f"select tablename from pg_tables where tablename like '{like}' "
                "and schemaname = current_schema() order by 1"
            )
        return [str(r[0]) for r in cur.fetchall()]


def test_reading_before_any_publish_says_what_to_run(store: ServingStore) -> None:
    with pytest.raises(ServingUnavailableError, match="recs run nightly"):
        get_recommendations(store.url, "a")
    store.connect().__enter__().close()  # an empty store file / schema
    with pytest.raises(ServingUnavailableError, match="recs run nightly"):
        get_recommendations(store.url, "a")


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


def _everything(store: ServingStore) -> list[tuple[object, ...]]:
    with store.connect() as conn, conn.cursor() as cur:
        rows: list[tuple[object, ...]] = []
        for table, key in (("recommendations", "1, 2"), ("popular_items", "1, 2"),
                           ("similar_items", "1, 2")):  # fmt: skip
            cur.execute(f"select * from {table} order by {key}")
            rows += [(table, *r) for r in cur.fetchall()]
        return rows


def test_rollback_restores_the_previous_version_byte_for_byte(store: ServingStore) -> None:
    _publish(store, recs_table(["a", "b"], 3, version="1"), "1")
    first = _everything(store)
    _publish(store, recs_table(["c"], 2, version="2"), "2")
    assert _everything(store) != first
    restored = rollback(store, None, clock=lambda: AT)
    assert (restored.run_id, restored.model_version) == ("run-1", "1")
    assert _everything(store) == first
    assert [v.run_id for v in versions(store) if v.live] == ["run-1"]
    # ... and forward again, by run id
    rollback(store, "run-2", clock=lambda: AT)
    assert {r[1] for r in _everything(store) if r[0] == "recommendations"} == {"c"}
    with pytest.raises(LookupError, match="no kept version of run run-9"):
        rollback(store, "run-9", clock=lambda: AT)


def test_only_the_last_versions_are_kept(store: ServingStore) -> None:
    for v in "1234":
        publish_recommendations(
            store, recs_table(["a"], 2, version=v), POPULAR, run_id=f"run-{v}",
            model_version=v, clock=lambda: AT, keep=2,
        )  # fmt: skip
    assert [v.run_id for v in versions(store)] == ["run-4", "run-3"]
    assert len(_tables(store, "recommendations\\_\\_v\\_%")) == 2


def test_debris_of_a_killed_publish_is_dropped_by_the_next(store: ServingStore) -> None:
    _publish(store, recs_table(["a"], 2, version="1"), "1")
    with store.connect() as conn, conn.cursor() as cur:
        # What a kill between the bulk load and the swap leaves, and an older layout's staging.
        cur.execute("create table recommendations__v_0123456789ab (x integer)")
        cur.execute("create table similar_items__staging_0123 (x integer)")
        conn.commit()
    _publish(store, recs_table(["a"], 2, version="2"), "2")
    assert _tables(store, "%0123%") == []
    assert len(_tables(store, "recommendations\\_\\_v\\_%")) == 2  # versions 1 and 2


def test_a_store_from_before_versions_is_taken_over(store: ServingStore) -> None:
    with store.connect() as conn, conn.cursor() as cur:
        cur.execute(
            "create table recommendations (user_id text, rank integer, item_id text, "
            "score double precision, source text, primary key (user_id, rank))"
        )
        cur.execute(
            "create table publications (run_id text not null, model_version text not null, "
            "n_users integer not null, n_rows integer not null, checksum text not null, "
            "status text not null, started_at text not null, published_at text)"
        )
        conn.commit()
    _publish(store, recs_table(["a"], 2, version="1"), "1")
    assert [r[1] for r in _everything(store) if r[0] == "recommendations"] == ["a", "a"]


def test_sqlite_reader_is_read_only(tmp_path: Path) -> None:
    import sqlite3

    store = ServingStore(f"sqlite:///{tmp_path / 'serving.sqlite'}")
    _publish(store, recs_table(["a"], 2), "1")
    with ServingReader(store.url) as reader:
        assert len(reader.get_recommendations("a")) == 2
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader._connection().execute("create table mine (x integer)")


@pytest.mark.postgres
def test_postgres_reader_is_read_only_and_reads_again_after_a_lost_connection(
    pg_schema_url: str,
) -> None:
    import psycopg

    store = ServingStore(pg_schema_url)
    _publish(store, recs_table(["a"], 2), "1")
    with ServingReader(store.url) as reader:
        for _ in range(6):  # past psycopg's prepare threshold: the prepared lookup reads the same
            assert [r.item_id for r in reader.get_recommendations("a")] == ["i1", "i2"]
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            reader._connection().execute("create table mine (x integer)")
        with psycopg.connect(pg_schema_url, autocommit=True) as admin:
            pid = reader._connection().info.backend_pid
            admin.execute("select pg_terminate_backend(%s)", (pid,))
        with pytest.raises(ServingUnavailableError, match="cannot read"):
            reader.get_recommendations("a")
        assert [r.item_id for r in reader.get_recommendations("a")] == ["i1", "i2"]


def test_an_unreachable_postgres_is_one_line_without_the_password() -> None:
    url = "postgresql://someone:s3cret@127.0.0.1:1/nowhere"
    with pytest.raises(ServingUnavailableError, match="cannot connect") as caught:
        get_recommendations(url, "a")
    assert "s3cret" not in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.postgres
def test_a_reader_role_reads_after_every_publish_and_cannot_write(pg_schema_url: str) -> None:
    import uuid

    import adbc_driver_postgresql.dbapi as postgresql

    from pipelines.stores.serving import grant_reader

    store = ServingStore(pg_schema_url)
    role = f"reader_{uuid.uuid4().hex[:8]}"
    grant_reader(store, role)  # before any publish: recorded, granted at each swap
    try:
        as_role = pg_schema_url.replace("://root@", f"://{role}@")
        for v in "123":
            _publish(store, recs_table(["a"], 2, version=v), v)
            got = get_recommendations(as_role, "a")
            assert [r.item_id for r in got] == ["i1", "i2"]
        with postgresql.connect(as_role) as conn, conn.cursor() as cur:
            cur.execute("select model_version from recommendations limit 1")
            assert cur.fetchall() == [("3",)]
            for statement in (
                "delete from recommendations",
                "insert into publications (run_id) values ('x')",
                "create table mine (x integer)",
            ):
                with pytest.raises(Exception, match=r"(?i)permission denied|read-only"):
                    cur.execute(statement)
                conn.rollback()
        grant_reader(store, role)  # again: an update, not an error
        with postgresql.connect(pg_schema_url, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(f'drop owned by "{role}"')
            cur.execute(f'drop role "{role}"')
        _publish(store, recs_table(["a"], 2, version="4"), "4")  # a dropped role blocks nothing
    finally:
        with postgresql.connect(pg_schema_url, autocommit=True) as conn, conn.cursor() as cur:
            if _role_exists(cur, role):  # the test dropped it itself unless it failed first
                cur.execute(f'drop owned by "{role}"')
                cur.execute(f'drop role "{role}"')


def _role_exists(cur: Any, role: str) -> bool:
    cur.execute("select 1 from pg_roles where rolname = $1", (role,))
    return bool(cur.fetchall())


def test_sqlite_has_no_roles(tmp_path: Path) -> None:
    from pipelines.stores.serving import grant_reader

    with pytest.raises(ValueError, match="SQLite has no roles"):
        grant_reader(ServingStore(f"sqlite:///{tmp_path / 's.sqlite'}"), "reader")
