"""The scored zone's files: how they are encoded, and that every reader gets the rows back."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from features.contracts import RECOMMENDATIONS
from pipelines.stores.scored import ScoredWriter, read_scored

AT = datetime(2026, 11, 1, tzinfo=UTC)


def _rows(users: list[str], k: int) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "user_id": u,
                "rank": r,
                "item_id": f"i{(n * 7 + r) % 13}",
                "score": 1.0 / (r + n),
                "source": "model",
                "model_version": "3",
                "run_id": "r1",
                "generated_at": AT,
                "expires_at": AT,
            }
            for n, u in enumerate(users)
            for r in range(1, k + 1)
        ],
        schema=RECOMMENDATIONS,
    )


def test_scored_lists_keep_key_statistics_only_and_read_back_the_same(tmp_path: Path) -> None:
    chunks = [_rows(["a", "b"], 3), _rows(["c"], 3)]
    writer = ScoredWriter(tmp_path, "r1")
    for chunk in chunks:
        writer.write(chunk)
    out = writer.commit(None, {"n_users": 3})
    path = out / "recommendations.parquet"
    meta = pq.ParquetFile(path).metadata.row_group(0)
    columns = {meta.column(i).path_in_schema: meta.column(i) for i in range(meta.num_columns)}
    assert {n for n, c in columns.items() if c.is_stats_set} == {"user_id", "rank"}
    assert "BYTE_STREAM_SPLIT" in columns["score"].encodings
    assert not columns["score"].has_dictionary_page
    assert columns["item_id"].has_dictionary_page
    assert columns["run_id"].has_dictionary_page
    expected = pa.concat_tables(chunks)
    assert read_scored(out).recommendations.equals(expected)  # schema (non-null fields) too
    assert pl.read_parquet(path).equals(pl.from_arrow(expected))  # type: ignore[arg-type]
    relation = duckdb.sql(f"select user_id, rank, score from '{path}' order by all")
    assert relation is not None
    columns_in = [expected.column(c).to_pylist() for c in ("user_id", "rank", "score")]
    assert relation.fetchall() == sorted(zip(*columns_in, strict=True))
