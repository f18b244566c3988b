"""The serving store online systems read (SQLite by default, PostgreSQL in production).

A publish writes each table (``recommendations``, ``popular_items``, ``similar_items``) into a
fresh staging table (Arrow -> ADBC bulk ingest), then swaps
all of them in with renames inside one transaction and records the publication. Readers see the
previous version until the commit and the new one after it, never a mix or an empty table; a
failure before the commit leaves yesterday's version serving (the staging table is dropped).
SQLite runs in WAL mode, so readers never block on the nightly write.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from features.contracts import POPULAR_ITEMS, RECOMMENDATIONS, SIMILAR_ITEMS, C, conform
from pipelines.stores.urls import redact

_TYPES = {
    "sqlite": {"text": "text", "int": "integer", "float": "double precision", "ts": "text"},
    "postgresql": {
        "text": "text",
        "int": "integer",
        "float": "double precision",
        "ts": "timestamptz",
    },
}

_DDL = {
    "recommendations": (
        "user_id {text} not null, rank {int} not null, item_id {text} not null, "
        "score {float} not null, source {text} not null, model_version {text} not null, "
        "run_id {text} not null, generated_at {ts} not null, expires_at {ts} not null, "
        "primary key (user_id, rank)"
    ),
    "popular_items": (
        "segment {text} not null, rank {int} not null, item_id {text} not null, "
        "score {float} not null, primary key (segment, rank)"
    ),
    "similar_items": (
        "item_id {text} not null, rank {int} not null, similar_item_id {text} not null, "
        "score {float} not null, primary key (item_id, rank)"
    ),
}

_PUBLICATIONS_DDL = (
    "create table if not exists publications (run_id {text} not null, "
    "model_version {text} not null, n_users {int} not null, n_rows {int} not null, "
    "checksum {text} not null, status {text} not null, started_at {ts} not null, "
    "published_at {ts})"
)


SQLITE_BUSY_TIMEOUT_MS = 10_000
"""How long a SQLite connection waits for another's lock instead of failing at once."""


@dataclass(frozen=True)
class ServingStore:
    """Where the serving tables live: ``sqlite:///<path>`` or ``postgresql://...``."""

    url: str

    @property
    def dialect(self) -> str:
        if self.url.startswith("sqlite:///"):
            return "sqlite"
        if self.url.startswith(("postgresql://", "postgres://")):
            return "postgresql"
        raise ValueError(
            f"serving url {redact(self.url)!r}: expected sqlite:///<path> or postgresql://<host>/<db>"
        )

    def param(self, n: int) -> str:
        """Placeholder for the n-th (1-based) bound parameter in this dialect."""
        return "?" if self.dialect == "sqlite" else f"${n}"

    def ddl(self, template: str) -> str:
        return template.format(**_TYPES[self.dialect])

    @contextmanager
    def connect(self) -> Iterator[Any]:
        """An ADBC DB-API connection (not autocommitting), closed on exit."""
        if self.dialect == "sqlite":
            import adbc_driver_sqlite.dbapi as sqlite

            path = Path(self.url.removeprefix("sqlite:///"))
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                # journal_mode is stored in the file: set once, when the file is created (setting
                # it on every connection takes a lock that readers collide with), and outside a
                # transaction, on a short autocommitting connection.
                with sqlite.connect(str(path), autocommit=True) as setup, setup.cursor() as cur:
                    cur.execute("pragma journal_mode = wal")
            conn = sqlite.connect(str(path))
            with conn.cursor() as cur:
                cur.execute(f"pragma busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        else:
            import adbc_driver_postgresql.dbapi as postgresql

            conn = postgresql.connect(self.url)
        try:
            yield conn
        finally:
            conn.close()


SQLITE_TS = "%Y-%m-%dT%H:%M:%S.%fZ"
"""How SQLite stores a UTC timestamp: ISO-8601 text its date functions read
(``julianday('2026-11-24T18:50:49.668733Z')``)."""


def _iso_text(column: pa.ChunkedArray) -> pa.Array:
    """Timestamps as :data:`SQLITE_TS` text. Each distinct value is formatted once in Python:
    the serving columns hold one or two values over millions of rows, and ``pc.strftime`` over
    all of them costs seconds (and prints Arrow's fractional seconds after its own ``%S``)."""
    distinct = pc.unique(column)
    text = pa.array(
        [None if v is None else v.strftime(SQLITE_TS) for v in distinct.to_pylist()], pa.string()
    )
    return pc.take(text, pc.index_in(column, value_set=distinct))


def _for_store(store: ServingStore, table: pa.Table) -> pa.Table:
    if store.dialect != "sqlite":
        return table
    # SQLite has no timestamp type: store UTC timestamps as ISO-8601 text.
    columns = [_iso_text(col) if pa.types.is_timestamp(col.type) else col for col in table.columns]
    return pa.table(columns, names=table.column_names)


def table_checksum(table: pa.Table, order_by: Sequence[str]) -> str:
    """SHA-256 of a table's content in a fixed row order."""
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    hashes = frame.sort(order_by).hash_rows(seed=0).to_numpy().tobytes()
    return hashlib.sha256(hashes).hexdigest()


@dataclass(frozen=True)
class Publication:
    """What a publish wrote."""

    run_id: str
    model_version: str
    n_users: int
    n_rows: int
    checksum: str


def publish_recommendations(
    store: ServingStore,
    recommendations: pa.Table,
    popular_items: pa.Table,
    *,
    similar_items: pa.Table | None = None,
    run_id: str,
    model_version: str,
    clock: Callable[[], datetime],
) -> Publication:
    """Replace the serving tables atomically and record the publication.

    Args:
        clock: returns the current UTC time (the start and the commit are stamped with it).
        recommendations: rows of the ``RECOMMENDATIONS`` contract (already validated).
        popular_items: rows of the ``POPULAR_ITEMS`` contract (fallback for unknown users).
        similar_items: rows of the ``SIMILAR_ITEMS`` contract (empty table when None).
    """
    tables = {
        "recommendations": conform(recommendations, RECOMMENDATIONS, "recommendations"),
        "popular_items": conform(popular_items, POPULAR_ITEMS, "popular_items"),
        "similar_items": conform(
            similar_items if similar_items is not None else SIMILAR_ITEMS.empty_table(),
            SIMILAR_ITEMS,
            "similar_items",
        ),
    }
    started_at = clock()
    recs = tables["recommendations"]
    publication = Publication(
        run_id=run_id,
        model_version=model_version,
        n_users=pc.count_distinct(recs.column(C.user_id)).as_py(),
        n_rows=recs.num_rows,
        checksum=table_checksum(recs, [C.user_id, C.rank]),
    )
    suffix = uuid.uuid4().hex[:12]
    staging = {name: f"{name}__staging_{suffix}" for name in tables}
    with store.connect() as conn:
        try:
            with conn.cursor() as cur:
                cur.execute(store.ddl(_PUBLICATIONS_DDL))
                for name, table in tables.items():
                    cur.execute(f"create table {staging[name]} ({store.ddl(_DDL[name])})")
                    cur.adbc_ingest(staging[name], _for_store(store, table), mode="append")
            conn.commit()
            with conn.cursor() as cur:
                for name in tables:
                    cur.execute(f"drop table if exists {name}__previous")
                    if _exists(store, cur, name):
                        cur.execute(f"alter table {name} rename to {name}__previous")
                    cur.execute(f"alter table {staging[name]} rename to {name}")
                    cur.execute(f"drop table if exists {name}__previous")
                p = store.param
                cur.execute(
                    "insert into publications values "
                    f"({p(1)}, {p(2)}, {p(3)}, {p(4)}, {p(5)}, 'published', {p(6)}, {p(7)})",
                    (
                        run_id,
                        model_version,
                        publication.n_users,
                        publication.n_rows,
                        publication.checksum,
                        _ts(store, started_at),
                        _ts(store, clock()),
                    ),
                )
            conn.commit()
        except BaseException:
            conn.rollback()
            with conn.cursor() as cur:
                for name in staging.values():
                    cur.execute(f"drop table if exists {name}")
            conn.commit()
            raise
    return publication


def _ts(store: ServingStore, value: datetime) -> Any:
    return value.strftime(SQLITE_TS) if store.dialect == "sqlite" else value


def _exists(store: ServingStore, cur: Any, table: str) -> bool:
    if store.dialect == "sqlite":
        cur.execute(
            "select count(*) from sqlite_master where type = 'table' and name = ?", (table,)
        )
    else:
        cur.execute(
            "select count(*) from pg_tables where tablename = $1 and schemaname = current_schema()",
            (table,),
        )
    row = cur.fetchone()
    return bool(row and row[0])


def read_recommendations(store: ServingStore, user_id: str) -> pa.Table:
    """One user's list as an online system reads it: a key lookup ordered by rank.

    An unknown user gets the global popular list (``source`` = popular), as a service would
    fall back to.
    """
    with store.connect() as conn, conn.cursor() as cur:
        if not _exists(store, cur, "recommendations"):
            raise LookupError(
                f"{redact(store.url)}: no recommendations table; run `recs run nightly`"
            )
        cur.execute(
            "select rank, item_id, score, source, model_version, generated_at from "
            f"recommendations where user_id = {store.param(1)} order by rank",
            (user_id,),
        )
        table = cur.fetch_arrow_table()
        if table.num_rows:
            return table
        cur.execute(
            "select rank, item_id, score, 'popular' as source from popular_items "
            "where segment = 'global' order by rank"
        )
        return cur.fetch_arrow_table()
