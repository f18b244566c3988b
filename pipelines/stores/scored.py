"""The lake's scored zone: each run's lists, written in chunks and committed by a manifest.

Layout::

    <lake>/recommendations/run_id=<id>/recommendations.parquet   one row per user_id x rank
    <lake>/recommendations/run_id=<id>/similar_items.parquet     one row per item_id x rank
    <lake>/recommendations/run_id=<id>/manifest.json             written last: the commit

A score run streams its lists chunk by chunk into a file beside its final name; only after the
recommendations suite passed does :meth:`ScoredWriter.commit` rename the files into place and
write the manifest (files, row counts, the checksum of the rows in file order). Publishing reads a
run by its manifest and checks the checksum, so a score run killed at any point, or a file
changed since, is never published; the newest run is found by the manifest's ``scored_at``,
never by a file's modification time.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from features.contracts import RECOMMENDATIONS, SIMILAR_ITEMS, C, ContractError, conform

SCORED = "recommendations"
MANIFEST = "manifest.json"
_RUN_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")


def parquet_options(schema: pa.Schema, keys: tuple[str, ...]) -> dict[str, object]:
    """How a scored file is encoded: zstd; dictionaries for strings and timestamps (ids and the
    run's constants repeat), none for numbers; floats byte-stream-split; min/max statistics on
    the ``keys`` only (what a reader prunes row groups by).

    Floats never fit a dictionary (Arrow tried one per page, then fell back) and min/max of every
    string column were computed for no reader: on 819,200 rows of lists (``large``, K=100),
    0.177 s with Arrow's defaults, 0.072 s this way, and 3.8 against 4.5 MB. The writer's thread
    shares the two cores with the kernel, so this is the stage's time (``bench/README.md``).
    DuckDB, Polars and Arrow read it back the same."""
    floats = [f.name for f in schema if pa.types.is_floating(f.type)]
    return {
        "compression": "zstd",
        "use_dictionary": [
            f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_timestamp(f.type)
        ],
        "write_statistics": list(keys),
        "column_encoding": dict.fromkeys(floats, "BYTE_STREAM_SPLIT"),
    }


def scored_dir(lake: Path, run_id: str) -> Path:
    """Where one run's scored lists are kept until (and after) they are published."""
    if not _RUN_ID.match(run_id) or run_id in {".", ".."}:
        raise ValueError(f"run id {run_id!r}: expected letters, digits, '_', '.', ':' or '-'")
    return lake / SCORED / f"run_id={run_id}"


def rows_digest(frame: pl.DataFrame) -> bytes:
    """The bytes one chunk adds to a run's checksum: a hash per row, in order."""
    return frame.hash_rows(seed=0).to_numpy().tobytes()


class ScoredWriter:
    """Streams one run's recommendations, chunk after chunk (bounded memory), beside their final
    name; :meth:`commit` makes them the run's scored lists in one step, :meth:`abort` removes
    them."""

    def __init__(self, lake: Path, run_id: str) -> None:
        self.dir = scored_dir(lake, run_id)
        self.dir.mkdir(parents=True, exist_ok=True)
        for stale in self.dir.glob(".*.tmp"):  # an earlier attempt of this run, killed
            stale.unlink(missing_ok=True)
        self.run_id = run_id
        self._tag = uuid.uuid4().hex
        self._tmp = self.dir / f".recommendations.parquet.{self._tag}.tmp"
        self._writer = pq.ParquetWriter(
            self._tmp, RECOMMENDATIONS, **parquet_options(RECOMMENDATIONS, (C.user_id, C.rank))
        )
        self._hash = hashlib.sha256()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="scored-writer")
        self._pending: Future[None] | None = None
        self._closed = False
        self.n_rows = 0

    def write(self, rows: pa.Table) -> None:
        """Append rows of the ``RECOMMENDATIONS`` contract. The chunk is hashed and written on a
        background thread while the caller builds the next one (one chunk in flight at most, so
        memory stays bounded); its errors surface at the next call or at :meth:`commit`."""
        table = conform(rows, RECOMMENDATIONS, "scored recommendations")
        self._wait()
        self._pending = self._pool.submit(self._write, table)
        self.n_rows += table.num_rows

    def _write(self, table: pa.Table) -> None:
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)
        self._hash.update(rows_digest(frame))
        self._writer.write_table(table)

    def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def commit(self, similar_items: pa.Table | None, meta: dict[str, object]) -> Path:
        """Rename the files into place, then write the manifest (the commit); returns the
        run's directory."""
        self._wait()
        self._pool.shutdown()
        self._writer.close()
        self._closed = True
        similar_tmp = None
        if similar_items is not None:
            similar_tmp = self.dir / f".similar_items.parquet.{self._tag}.tmp"
            table = conform(similar_items, SIMILAR_ITEMS, "similar items")
            options = parquet_options(SIMILAR_ITEMS, (C.item_id, C.rank))
            pq.write_table(table, similar_tmp, **options)
        (self.dir / MANIFEST).unlink(missing_ok=True)  # a rerun: uncommitted until the end
        os.replace(self._tmp, self.dir / "recommendations.parquet")
        if similar_tmp is not None:
            os.replace(similar_tmp, self.dir / "similar_items.parquet")
        else:
            (self.dir / "similar_items.parquet").unlink(missing_ok=True)
        manifest = {
            **meta,
            "run_id": self.run_id,
            "recommendations": {"file": "recommendations.parquet", "rows": self.n_rows},
            "similar_items": None
            if similar_items is None
            else {"file": "similar_items.parquet", "rows": similar_items.num_rows},
            "checksum": self._hash.hexdigest(),
        }
        tmp = self.dir / f".{MANIFEST}.{self._tag}.tmp"
        tmp.write_text(json.dumps(manifest, indent=1, default=str))
        os.replace(tmp, self.dir / MANIFEST)
        return self.dir

    def abort(self) -> None:
        """Remove what this writer left beside the final names (the committed files of an
        earlier run stay, without a manifest if the kill came between the renames)."""
        if not self._closed:
            try:
                self._wait()
            except Exception:  # aborting already: the caller's error is the one to see
                pass
            finally:
                self._pool.shutdown()
                self._writer.close()
                self._closed = True
        for tmp in self.dir.glob(f".*.{self._tag}.tmp"):
            tmp.unlink(missing_ok=True)


@dataclass(frozen=True)
class ScoredRun:
    """A committed run's lists, read back and checked against its manifest."""

    directory: Path
    manifest: dict[str, object]
    recommendations: pa.Table
    similar_items: pa.Table | None

    @property
    def checksum(self) -> str:
        return str(self.manifest["checksum"])


def read_manifest(directory: Path) -> dict[str, object]:
    """A run's manifest; refuses a run that never committed."""
    path = directory / MANIFEST
    if not path.is_file():
        raise ContractError(
            f"{directory}: no {MANIFEST}; the score run did not finish, so its lists are never "
            "published (run `recs run score` again)"
        )
    manifest: dict[str, object] = json.loads(path.read_text())
    return manifest


def read_scored(directory: Path) -> ScoredRun:
    """A committed run's lists and similar items, after checking the rows are the ones the
    recommendations suite passed (the manifest's checksum over the file's rows in order).

    Raises:
        ContractError: no manifest (the run never committed), or the rows changed since.
    """
    manifest = read_manifest(directory)
    table = pq.read_table(directory / "recommendations.parquet")
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    if hashlib.sha256(rows_digest(frame)).hexdigest() != manifest["checksum"]:
        raise ContractError(
            f"{directory}: the lists are not the ones the recommendations suite passed (changed "
            "since scoring); run `recs run score` again"
        )
    similar = directory / "similar_items.parquet"
    return ScoredRun(
        directory,
        manifest,
        table,
        pq.read_table(similar) if manifest.get("similar_items") else None,
    )


def latest_scored(lake: Path) -> Path:
    """The committed run scored last (by its manifest's ``scored_at``)."""
    runs = []
    for manifest in (lake / SCORED).glob(f"run_id=*/{MANIFEST}"):
        scored_at = json.loads(manifest.read_text()).get("scored_at", "")
        runs.append((str(scored_at), manifest.parent.name, manifest.parent))
    if not runs:
        raise FileNotFoundError(f"{lake / SCORED}: nothing scored; run `recs run score`")
    return max(runs)[2]


def scored_at(value: datetime) -> str:
    """How a manifest stamps the scoring time (sortable text)."""
    return value.isoformat()
