"""The serving store online systems read (SQLite by default, PostgreSQL in production).

Every publish is a **version**: its tables ``recommendations__v_<version>``,
``popular_items__v_<version>`` and ``similar_items__v_<version>`` are bulk-loaded (Arrow -> ADBC
ingest, keys built after the load), then one short transaction points the stable views
``recommendations``, ``popular_items`` and ``similar_items`` at them and records the version in
``publications``. Readers query the views: they see the previous version until the commit and
the new one after it, never a mix or an empty table, and a failure before the commit leaves
yesterday's version serving. Grants on the views (PostgreSQL reader roles, ``recs serving
grant-reader``) and constraint names survive every publish, because nothing is renamed.

A version's lists keep only what varies by row (``user_id, rank, item_id, score, source``). The
run's constants (``model_version, run_id, generated_at, expires_at``: one value each per publish,
checked) are literals of the ``recommendations`` view, recorded in ``publications`` for a
rollback. Repeated on 5.3M rows, they were half of a SQLite store's bytes (662 against 313 MB),
formatted, loaded and written row by row (``bench/README.md``, "Serving").

The last ``keep`` versions stay addressable by run id, so ``recs serving rollback [RUN_ID]``
points the views back in one transaction. Tables of a publish that never committed (a kill
between load and swap) are dropped at the start of the next one. The swap waits at most
:data:`LOCK_TIMEOUT_S` for a lock and is retried with backoff. SQLite is in WAL mode (set once,
when the file is created) with a busy timeout on every connection, so readers never block on
the nightly write.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from features.contracts import POPULAR_ITEMS, RECOMMENDATIONS, SIMILAR_ITEMS, C, conform
from pipelines.stores.urls import redact

T = TypeVar("T")

_TYPES = {
    "sqlite": {"text": "text", "int": "integer", "float": "double precision", "ts": "text"},
    "postgresql": {
        "text": "text", "int": "integer", "float": "double precision", "ts": "timestamptz",
    },
}  # fmt: skip

_DDL = {
    "recommendations": (
        "user_id {text} not null, rank {int} not null, item_id {text} not null, "
        "score {float} not null, source {text} not null"
    ),
    "popular_items": (
        "segment {text} not null, rank {int} not null, item_id {text} not null, "
        "score {float} not null"
    ),
    "similar_items": (
        "item_id {text} not null, rank {int} not null, similar_item_id {text} not null, "
        "score {float} not null"
    ),
}
_KEYS = {"recommendations": "user_id, rank", "popular_items": "segment, rank",
         "similar_items": "item_id, rank"}  # fmt: skip
VIEWS = tuple(_DDL)
RUN_CONSTANTS = ("model_version", "run_id", "generated_at", "expires_at")
"""Columns of the ``RECOMMENDATIONS`` contract with one value per publish: served by the view."""

_PUBLICATIONS_DDL = (
    "create table if not exists publications (run_id {text} not null, "
    "model_version {text} not null, n_users {int} not null, n_rows {int} not null, "
    "checksum {text} not null, status {text} not null, started_at {ts} not null, "
    "published_at {ts}, version {text}, seq {int}, generated_at {ts}, expires_at {ts})"
)
_READERS_DDL = "create table if not exists serving_readers (role {text} primary key)"

SQLITE_BUSY_TIMEOUT_MS = 10_000
"""How long a SQLite connection waits for another's lock instead of failing at once."""
LOCK_TIMEOUT_S = 5
"""How long the swap waits for a PostgreSQL lock (a long reader query) before it retries."""
SWAP_ATTEMPTS = 6
KEEP_VERSIONS = 7
_ROLE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


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

    @property
    def sqlite_path(self) -> Path:
        return Path(self.url.removeprefix("sqlite:///"))

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

            path = self.sqlite_path
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
                # Sorts (a version's key build) on every core: 2.5 -> 2.3 s for 5.3M keys here.
                cur.execute(f"pragma threads = {os.cpu_count() or 1}")
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


def create_table_sql(store: ServingStore, table: str, kind: str) -> str:
    """``create table`` for a serving table of ``kind`` (recommendations, popular_items,
    similar_items) named ``table``. PostgreSQL: without its key (built after the load,
    :func:`_add_key`). SQLite: a ``without rowid`` table clustered on its key, so a lookup is
    one B-tree descent and there is no separate index to build; the lists arrive in key order
    (user, rank), so each row is appended to the last leaf."""
    columns = store.ddl(_DDL[kind])
    if store.dialect == "sqlite":
        return f"create table {table} ({columns}, primary key ({_KEYS[kind]})) without rowid"
    return f"create table {table} ({columns})"


def stored_rows(recommendations: pa.Table) -> pa.Table:
    """The columns a version's ``recommendations`` table keeps (the run's constants dropped).
    No loaded column is a timestamp, so SQLite needs no text conversion of the rows."""
    return recommendations.drop_columns(
        [c for c in RUN_CONSTANTS if c in recommendations.column_names]
    )


def _run_constants(
    recs: pa.Table, run_id: str, model_version: str
) -> tuple[datetime | None, datetime | None]:
    """``generated_at`` and ``expires_at`` of a publish's rows (None: no rows).

    Raises:
        ValueError: a constant column holds more than one value, or the rows' run id or model
            version is not the publish's.
    """
    values: dict[str, Any] = {}
    for name in RUN_CONSTANTS:
        distinct = pc.unique(recs.column(name)).to_pylist()
        if len(distinct) > 1:
            raise ValueError(
                f"recommendations: column {name} holds {len(distinct)} values "
                f"({', '.join(map(str, distinct[:3]))}...); expected one per publish (one run)"
            )
        values[name] = distinct[0] if distinct else None
    for name, expected in (("run_id", run_id), ("model_version", model_version)):
        if values[name] is not None and values[name] != expected:
            raise ValueError(
                f"recommendations: column {name} is {values[name]!r}; expected {expected!r}, "
                f"the publish's {name}"
            )
    return values["generated_at"], values["expires_at"]


def table_checksum(table: pa.Table, order_by: Sequence[str]) -> str:
    """SHA-256 of a table's content in a fixed row order (the same bytes as
    :func:`pipelines.stores.scored.rows_digest` over the sorted rows)."""
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    hashes = frame.sort(order_by).hash_rows(seed=0).to_numpy().tobytes()
    return hashlib.sha256(hashes).hexdigest()


@dataclass(frozen=True)
class Publication:
    """What a publish (or a rollback) made live."""

    run_id: str
    model_version: str
    n_users: int
    n_rows: int
    checksum: str
    version: str = ""
    generated_at: datetime | str | None = None  # the lists' constants (SQLite: text)
    expires_at: datetime | str | None = None


def _is_lock_error(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(
        s in text
        for s in ("database is locked", "busy", "lock timeout", "could not obtain lock", "deadlock")
    )


def with_lock_retries(action: Callable[[], T], attempts: int = SWAP_ATTEMPTS) -> T:
    """Run ``action``; on a lock error (SQLite busy, PostgreSQL lock timeout or deadlock) wait
    0.2 s, 0.4 s, ... and try again, ``attempts`` times in all."""
    for attempt in range(attempts):
        try:
            return action()
        except Exception as exc:
            if not _is_lock_error(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")


def publish_recommendations(
    store: ServingStore,
    recommendations: pa.Table,
    popular_items: pa.Table,
    *,
    similar_items: pa.Table | None = None,
    run_id: str,
    model_version: str,
    clock: Callable[[], datetime],
    checksum: str | None = None,
    keep: int = KEEP_VERSIONS,
    load_recommendations: Callable[[Any, str], object] | None = None,
) -> Publication:
    """Load a new version and make it the one served, in one transaction; record it.

    Args:
        recommendations: rows of the ``RECOMMENDATIONS`` contract (already validated).
        popular_items: rows of the ``POPULAR_ITEMS`` contract (fallback for unknown users).
        similar_items: rows of the ``SIMILAR_ITEMS`` contract (empty table when None).
        clock: returns the current UTC time (the start and the commit are stamped with it).
        checksum: the lists' checksum when the caller has it (else computed here).
        keep: versions kept addressable for a rollback (the live one included).
        load_recommendations: loads the lists into the version's table given the cursor and
            the table's name (default: ``recommendations``, loaded here; see
            :mod:`pipelines.stores.serving_shards` for a load over parallel connections).

    Raises:
        ValueError: the lists hold more than one value of a run constant (``RUN_CONSTANTS``),
            or name another run or model version than ``run_id`` and ``model_version``.
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
    generated_at, expires_at = _run_constants(recs, run_id, model_version)
    version = uuid.uuid4().hex[:12]
    publication = Publication(
        run_id=run_id,
        model_version=model_version,
        n_users=pc.count_distinct(recs.column(C.user_id)).as_py(),
        n_rows=recs.num_rows,
        checksum=checksum or table_checksum(recs, [C.user_id, C.rank]),
        version=version,
        generated_at=generated_at,
        expires_at=expires_at,
    )
    with store.connect() as conn:
        with_lock_retries(lambda: _prepare(store, conn))
        live = _live(store, conn)
        if live is not None and (live.run_id, live.checksum) == (run_id, publication.checksum):
            return live  # a rerun after a kill past the swap: already served, not a new version
        try:
            with conn.cursor() as cur:
                for name, table in tables.items():
                    target = f"{name}__v_{version}"
                    cur.execute(create_table_sql(store, target, name))
                    if name == "recommendations" and load_recommendations is not None:
                        load_recommendations(cur, target)
                    else:
                        cur.adbc_ingest(target, stored_rows(table), mode="append")
                    _add_key(store, cur, target, _KEYS[name])
            conn.commit()
            with_lock_retries(
                lambda: _point_views(store, conn, publication, "published", started_at, clock)
            )
        except BaseException:
            conn.rollback()
            with conn.cursor() as cur:
                for name in tables:
                    cur.execute(f"drop table if exists {name}__v_{version}")
            conn.commit()
            raise
        _drop_old_versions(store, conn, keep)
    return publication


def _live(store: ServingStore, conn: Any) -> Publication | None:
    """The publication served now (None before the first, or if its tables are gone)."""
    with conn.cursor() as cur:
        cur.execute(
            "select run_id, model_version, n_users, n_rows, checksum, version from publications "
            "where version is not null and seq is not null order by seq desc limit 1"
        )
        row = cur.fetchone()
        if row is None or not _exists(store, cur, f"recommendations__v_{row[5]}"):
            return None
    run, model, users, rows, checksum, version = row
    return Publication(str(run), str(model), int(users), int(rows), str(checksum), str(version))


def _add_key(store: ServingStore, cur: Any, table: str, columns: str) -> None:
    """PostgreSQL: the table's key, built after the bulk load (an index filled row by row costs
    more). SQLite tables are created clustered on their key (:func:`create_table_sql`)."""
    if store.dialect == "postgresql":
        cur.execute(f"alter table {table} add constraint {table}_pkey primary key ({columns})")


def _prepare(store: ServingStore, conn: Any) -> None:
    """The bookkeeping tables exist (older stores gain the new columns), and tables of
    publishes that never committed are dropped."""
    with conn.cursor() as cur:
        cur.execute(store.ddl(_PUBLICATIONS_DDL))
        cur.execute(store.ddl(_READERS_DDL))
        have = _columns(store, cur, "publications")
        for name, kind in (
            ("version", "{text}"), ("seq", "{int}"), ("generated_at", "{ts}"),
            ("expires_at", "{ts}"),
        ):  # fmt: skip
            if name not in have:
                cur.execute(f"alter table publications add column {name} {store.ddl(kind)}")
        live = _recorded_versions(cur)
        for table in _tables(store, cur):
            name, _, version = table.partition("__v_")
            if "__staging_" in table or (version and name in VIEWS and version not in live):
                cur.execute(f"drop table if exists {table}")
    conn.commit()


def _point_views(
    store: ServingStore,
    conn: Any,
    pub: Publication,
    status: str,
    started_at: datetime,
    clock: Callable[[], datetime],
) -> None:
    """One transaction: every view to version ``pub.version``, grants to the reader roles, and
    the publications row. Rolled back whole on any error."""
    try:
        with conn.cursor() as cur:
            if store.dialect == "postgresql":
                cur.execute(f"set local lock_timeout = '{LOCK_TIMEOUT_S}s'")
            kinds = _kinds(store, cur)
            if store.dialect == "postgresql":
                # A role dropped since it was granted must not fail every later publish.
                cur.execute(
                    "select role from serving_readers "
                    "where role in (select rolname from pg_roles) order by role"
                )
            else:
                cur.execute("select role from serving_readers order by role")
            readers = [str(r[0]) for r in cur.fetchall()]
            for name in VIEWS:
                if kinds.get(name) == "table":  # a store from before versions: its last table
                    cur.execute(f"drop table {name}")
                source = _view_source(store, cur, name, pub)
                if store.dialect == "sqlite":
                    cur.execute(f"drop view if exists {name}")
                    cur.execute(f"create view {name} as {source}")
                else:
                    cur.execute(f"create or replace view {name} as {source}")
                    for role in readers:
                        cur.execute(f'grant select on {name} to "{role}"')
            p = store.param
            cur.execute(
                "insert into publications (run_id, model_version, n_users, n_rows, checksum, "
                "status, started_at, published_at, version, generated_at, expires_at, seq) "
                f"values ({p(1)}, {p(2)}, {p(3)}, {p(4)}, {p(5)}, {p(6)}, {p(7)}, {p(8)}, {p(9)}, "
                f"{p(10)}, {p(11)}, (select coalesce(max(seq), 0) + 1 from publications))",
                (
                    pub.run_id, pub.model_version, pub.n_users, pub.n_rows, pub.checksum, status,
                    _ts(store, started_at), _ts(store, clock()), pub.version,
                    _ts(store, pub.generated_at), _ts(store, pub.expires_at),
                ),
            )  # fmt: skip
        conn.commit()
    except BaseException:
        conn.rollback()
        raise


def _view_source(store: ServingStore, cur: Any, name: str, pub: Publication) -> str:
    """What view ``name`` selects for version ``pub.version``: its table, and for the lists the
    run's constants as literals (a version loaded before they left the table: its columns)."""
    table = f"{name}__v_{pub.version}"
    if name != "recommendations" or "run_id" in _columns(store, cur, table):
        return f"select * from {table}"
    kind = _TYPES[store.dialect]["ts"]
    constants = {
        "model_version": _literal(pub.model_version, "text"),
        "run_id": _literal(pub.run_id, "text"),
        "generated_at": _literal(_ts(store, pub.generated_at), kind),
        "expires_at": _literal(_ts(store, pub.expires_at), kind),
    }
    columns = ", ".join(f"{constants[c]} as {c}" if c in constants else c
                        for c in RECOMMENDATIONS.names)  # fmt: skip
    return f"select {columns} from {table}"


def _literal(value: object, kind: str) -> str:
    """``value`` as a typed SQL literal (quotes doubled): ``cast('...' as <kind>)``."""
    if value is None:
        return f"cast(null as {kind})"
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    return "cast('" + text.replace("'", "''") + f"' as {kind})"


def _drop_old_versions(store: ServingStore, conn: Any, keep: int) -> None:
    """Drop the tables of versions beyond the ``keep`` most recently made live. Best effort: a
    reader still on an old table only delays its drop to the next publish."""
    try:
        with conn.cursor() as cur:
            if store.dialect == "postgresql":
                cur.execute(f"set local lock_timeout = '{LOCK_TIMEOUT_S}s'")
            kept = set(_recorded_versions(cur)[:keep])
            for table in _tables(store, cur):
                name, _, version = table.partition("__v_")
                if name in VIEWS and version and version not in kept:
                    cur.execute(f"drop table if exists {table}")
        conn.commit()
    except Exception as exc:
        conn.rollback()
        if not _is_lock_error(exc):
            raise


def _recorded_versions(cur: Any) -> list[str]:
    """Versions in the order they were last made live, newest first."""
    cur.execute(
        "select version, max(seq) from publications where version is not null "
        "group by version order by 2 desc"
    )
    return [str(r[0]) for r in cur.fetchall()]


@dataclass(frozen=True)
class Version:
    """One kept version of the serving tables."""

    run_id: str
    model_version: str
    version: str
    n_users: int
    n_rows: int
    published_at: str
    live: bool


def versions(store: ServingStore) -> list[Version]:
    """The versions a rollback can return to, newest first (the live one flagged)."""
    with store.connect() as conn, conn.cursor() as cur:
        if not _exists(store, cur, "publications"):
            return []
        if "version" not in _columns(store, cur, "publications"):
            return []
        tables = set(_tables(store, cur))
        cur.execute(
            "select run_id, model_version, version, n_users, n_rows, published_at, seq "
            "from publications where version is not null order by seq desc"
        )
        rows, seen, out = cur.fetchall(), set(), []
        for i, (run, model, version, users, n, at, _) in enumerate(rows):
            if version in seen or f"recommendations__v_{version}" not in tables:
                continue
            seen.add(version)
            out.append(Version(str(run), str(model), str(version), int(users), int(n), str(at),
                               i == 0))  # fmt: skip
        return out


def rollback(store: ServingStore, run_id: str | None, clock: Callable[[], datetime]) -> Publication:
    """Serve again the version published by ``run_id`` (default: the one before the live one),
    in one transaction; recorded in ``publications`` with status ``rollback``.

    Raises:
        LookupError: no such kept version.
    """
    kept = versions(store)
    live = next((v for v in kept if v.live), None)
    if run_id is None:
        target = next((v for v in kept if not v.live), None)
    else:
        target = next((v for v in kept if v.run_id == run_id), None)
    if target is None or (live is not None and target.version == live.version and run_id is None):
        known = ", ".join(f"{v.run_id}{' (live)' if v.live else ''}" for v in kept) or "none"
        wanted = f"run {run_id}" if run_id else "a previous version"
        raise LookupError(f"{redact(store.url)}: no kept version of {wanted}; kept: {known}")
    pub = Publication(target.run_id, target.model_version, target.n_users, target.n_rows,
                      "", target.version)  # fmt: skip
    with store.connect() as conn:
        with conn.cursor() as cur:
            cur.execute(
                "select checksum, generated_at, expires_at from publications "
                f"where version = {store.param(1)} order by seq limit 1",
                (target.version,),
            )
            checksum, generated_at, expires_at = cur.fetchone()
        pub = Publication(pub.run_id, pub.model_version, pub.n_users, pub.n_rows, str(checksum),
                          pub.version, generated_at, expires_at)  # fmt: skip
        started = clock()
        with_lock_retries(lambda: _point_views(store, conn, pub, "rollback", started, clock))
    return pub


def grant_reader(store: ServingStore, role: str) -> None:
    """Create (or update) a PostgreSQL role that may read the serving views and nothing else;
    recorded in ``serving_readers``, so every later publish grants it again in its swap.

    Raises:
        ValueError: SQLite (no roles: give readers the file, opened read-only), or a role name
            that is not a plain identifier.
    """
    if store.dialect != "postgresql":
        raise ValueError(
            "SQLite has no roles: readers open the file read-only (pipelines.stores.reader)"
        )
    if not _ROLE.match(role):
        raise ValueError(f"role {role!r}: expected a lower-case identifier (a-z, 0-9, _)")
    with store.connect() as conn:
        with_lock_retries(lambda: _prepare(store, conn))
        with conn.cursor() as cur:
            cur.execute("select 1 from pg_roles where rolname = $1", (role,))
            if not cur.fetchall():
                cur.execute(f'create role "{role}" login')
            cur.execute(f'alter role "{role}" nosuperuser nocreatedb nocreaterole')
            cur.execute("select current_database(), current_schema()")
            database, schema = cur.fetchone()
            cur.execute(f'grant connect on database "{database}" to "{role}"')
            cur.execute(f'grant usage on schema "{schema}" to "{role}"')
            cur.execute(f'grant select on publications to "{role}"')
            for name, kind in _kinds(store, cur).items():
                if name in VIEWS and kind == "view":
                    cur.execute(f'grant select on {name} to "{role}"')
            cur.execute(
                "insert into serving_readers values ($1) on conflict (role) do nothing", (role,)
            )
        conn.commit()


def _ts(store: ServingStore, value: datetime | str | None) -> Any:
    """A timestamp as the store keeps it (SQLite: :data:`SQLITE_TS` text)."""
    if store.dialect == "sqlite" and isinstance(value, datetime):
        return value.strftime(SQLITE_TS)
    return value


def _kinds(store: ServingStore, cur: Any) -> dict[str, str]:
    """Table or view name -> 'table' | 'view', in the store's schema."""
    if store.dialect == "sqlite":
        cur.execute("select name, type from sqlite_master where type in ('table', 'view')")
    else:
        cur.execute(
            "select table_name, case table_type when 'VIEW' then 'view' else 'table' end "
            "from information_schema.tables where table_schema = current_schema()"
        )
    return {str(n): str(k) for n, k in cur.fetchall()}


def _tables(store: ServingStore, cur: Any) -> list[str]:
    return sorted(n for n, k in _kinds(store, cur).items() if k == "table")


def _columns(store: ServingStore, cur: Any, table: str) -> set[str]:
    if store.dialect == "sqlite":
        cur.execute(f"select name from pragma_table_info('{table}')")
    else:
        cur.execute(
            "select column_name from information_schema.columns "
            "where table_schema = current_schema() and table_name = $1",
            (table,),
        )
    return {str(r[0]) for r in cur.fetchall()}


def _exists(store: ServingStore, cur: Any, table: str) -> bool:
    return table in _kinds(store, cur)
