"""Reading the serving store the way an online service does: one key lookup per request.

:class:`ServingReader` keeps one connection and never writes: SQLite is opened read-only (a
``mode=ro`` URI) with a busy timeout, PostgreSQL in read-only transactions, so a reader can never
block a publish or be blocked by one (readers see the version that was live when their query
began). It depends on nothing of the engine but this module, so online code can import it alone.

PostgreSQL is read with psycopg, not ADBC (which the publish's bulk load uses): a lookup is
0.46 against 1.06 ms at the median here, and a connection 4 against 51 ms (ADBC reads the type
catalog on connect), which is what a service that connects per request pays
(``bench/README.md``, "Serving"). psycopg prepares a lookup it has run five times.

An unknown user gets the popular list of their segment when the caller knows one of their
attributes (``{"gender": "F"}`` -> segment ``gender:F``), else the global one; its scores are the
same share-of-active-users scale as the ``popular`` rows of known users' lists.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from pipelines.stores.serving import SQLITE_BUSY_TIMEOUT_MS, ServingStore
from pipelines.stores.urls import redact


@dataclass(frozen=True)
class Recommendation:
    """One row of a user's list."""

    rank: int
    item_id: str
    score: float
    source: str


class ServingUnavailableError(LookupError):
    """Nothing published yet, or the store cannot be read; the message says which, in one line."""


class ServingReader:
    """A long-lived read-only connection to the serving store (``with ServingReader(url) as r``)."""

    def __init__(self, url: str) -> None:
        self.store = ServingStore(url)
        self._conn: Any = None

    def __enter__(self) -> ServingReader:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> Any:
        if self._conn is None:
            if self.store.dialect == "sqlite":
                path = self.store.sqlite_path
                if not path.exists():
                    raise ServingUnavailableError(
                        f"{redact(self.store.url)}: no serving store; run `recs run nightly`"
                    )
                self._conn = sqlite3.connect(
                    f"file:{path}?mode=ro",
                    uri=True,
                    timeout=SQLITE_BUSY_TIMEOUT_MS / 1000,
                    check_same_thread=False,
                )
            else:
                import psycopg

                try:
                    conn = psycopg.connect(**_read_only_params(self.store.url), autocommit=True)
                except psycopg.OperationalError as exc:
                    raise ServingUnavailableError(
                        f"{redact(self.store.url)}: cannot connect: {_first_line(exc)}"
                    ) from exc
                self._conn = conn
        return self._conn

    def _rows(self, template: str, args: tuple[object, ...]) -> list[tuple[Any, ...]]:
        """Run ``template`` with ``{1}``, ``{2}``... as this dialect's placeholders."""
        conn = self._connection()
        if self.store.dialect == "sqlite":
            sql = template.format("", *("?" for _ in args))
            try:
                return conn.execute(sql, args).fetchall()  # type: ignore[no-any-return]
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):
                    raise ServingUnavailableError(
                        f"{redact(self.store.url)}: nothing published yet; run `recs run nightly`"
                    ) from exc
                raise
        import psycopg

        try:
            rows = conn.execute(template.format("", *("%s" for _ in args)), args).fetchall()
            return rows  # type: ignore[no-any-return]
        except psycopg.errors.UndefinedTable as exc:
            raise ServingUnavailableError(
                f"{redact(self.store.url)}: nothing published yet; run `recs run nightly`"
            ) from exc
        except psycopg.OperationalError as exc:  # the server went away: reconnect next time
            self.close()
            raise ServingUnavailableError(
                f"{redact(self.store.url)}: cannot read: {_first_line(exc)}"
            ) from exc

    def get_recommendations(
        self, user_id: str, k: int = 10, attributes: Mapping[str, str] | None = None
    ) -> list[Recommendation]:
        """The user's top ``k`` (best first). Unknown users: the popular list of the first
        attribute whose segment is published, else the global one (``source`` popular)."""
        rows = self._rows(
            "select rank, item_id, score, source from recommendations "
            "where user_id = {1} and rank <= {2} order by rank",
            (user_id, k),
        )
        if not rows:
            segments = [f"{name}:{value}" for name, value in (attributes or {}).items()]
            for segment in [*segments, "global"]:
                rows = self._rows(
                    "select rank, item_id, score, 'popular' from popular_items "
                    "where segment = {1} and rank <= {2} order by rank",
                    (segment, k),
                )
                if rows:
                    break
        return [Recommendation(int(r), str(i), float(s), str(src)) for r, i, s, src in rows]


def _read_only_params(url: str) -> dict[str, Any]:
    """``url``'s connection parameters for a reader: every transaction read-only from the
    start (a startup option: a ``SET`` after connecting was one more round trip, which a service
    connecting per request pays on each: connect, ``select 1``, close, idle, p50/p99
    4.3-4.7/11-11.7 -> 3.8-4.3/6.6-7.8 ms here), the URL's own options kept; and a host that
    drops packets fails in seconds, not at the TCP timeout (minutes)."""
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(url)
    params.setdefault("connect_timeout", "5")
    params["options"] = f"{params.get('options') or ''} -c default_transaction_read_only=on"
    return params


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def get_recommendations(
    url: str, user_id: str, k: int = 10, attributes: Mapping[str, str] | None = None
) -> list[Recommendation]:
    """One lookup on a fresh connection (a service keeps a :class:`ServingReader` instead)."""
    with ServingReader(url) as reader:
        return reader.get_recommendations(user_id, k, attributes)
