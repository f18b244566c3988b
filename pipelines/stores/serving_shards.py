"""Loading a PostgreSQL serving version over parallel connections, one per shard.

A publish on a Dask cluster cuts the scored run's ``recommendations.parquet`` into parts of
whole row groups (the score stage writes one or more per user chunk, so a part holds whole
users) and each shard loads its part into a table of its own, on its own connection,
committed: ``recommendations__v_<version>__part<i>`` (dropped and made again when a shard is
run twice, so a retried shard loads its rows once). The publish then copies the parts into the
version's table in part order, inside its own transaction, server-side, and builds the key
(:func:`pipelines.stores.serving.publish_recommendations`): the same rows, in the same order,
as a load from one connection. Parts left by a killed publish are dropped by the next one (they
are tables of a version that never went live).

SQLite has one writer at a time: a publish to SQLite loads from one connection, cluster or not.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from features.contracts import RECOMMENDATIONS, conform
from pipelines.stores import cluster
from pipelines.stores.serving import ServingStore, create_table_sql, stored_rows

PART_ROWS = 1_000_000
"""Rows a shard loads (whole row groups; at least one group per part)."""


@dataclass(frozen=True)
class _Load:
    url: str
    path: Path
    target: str


def parts_of(path: Path, part_rows: int = PART_ROWS) -> list[list[int]]:
    """The row groups of ``path`` in order, cut into runs of about ``part_rows`` rows."""
    meta = pq.ParquetFile(path).metadata
    parts: list[list[int]] = [[]]
    rows = 0
    for group in range(meta.num_row_groups):
        if parts[-1] and rows + meta.row_group(group).num_rows > part_rows:
            parts.append([])
            rows = 0
        parts[-1].append(group)
        rows += meta.row_group(group).num_rows
    return [p for p in parts if p]


def part_table(target: str, index: int) -> str:
    return f"{target}__part{index}"


def load_part(shared: _Load, part: tuple[int, list[int]]) -> int:
    """Load one part's row groups into its own table, committed; returns its rows."""
    index, groups = part
    rows = conform(
        pq.ParquetFile(shared.path).read_row_groups(groups), RECOMMENDATIONS, str(shared.path)
    )
    store = ServingStore(shared.url)
    table = part_table(shared.target, index)
    with store.connect() as conn, conn.cursor() as cur:
        cur.execute(f"drop table if exists {table}")
        cur.execute(create_table_sql(store, table, "recommendations"))
        cur.adbc_ingest(table, stored_rows(rows), mode="append")
        conn.commit()
    return int(rows.num_rows)


def load_sharded(
    client: Any, store: ServingStore, cur: Any, path: Path, target: str, part_rows: int = PART_ROWS
) -> int:
    """Load ``path`` (a scored run's recommendations) into ``target`` through one shard per part
    on the cluster ``client`` reaches (None: in process, part after part); the copy into
    ``target`` runs on ``cur``, in the caller's transaction. Returns the rows loaded."""
    if store.dialect != "postgresql":
        raise ValueError("sharded loads are for PostgreSQL (SQLite has one writer at a time)")
    parts = list(enumerate(parts_of(path, part_rows)))
    shared = _Load(store.url, path, target)
    loaded = sum(cluster.map_in_order(client, load_part, shared, parts))
    for index, _ in parts:
        cur.execute(f"insert into {target} select * from {part_table(target, index)}")
        cur.execute(f"drop table {part_table(target, index)}")
    return loaded
