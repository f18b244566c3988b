"""Importers: public data sets and arbitrary CSV exports into landing files and catalogs.

After an import, the landing folder holds events as gzipped JSON lines in the contract's own
format plus ``users.csv`` and ``items.csv``, so the nightly flow runs on them unchanged.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import polars as pl

from features.contracts import C
from pipelines.sources.readers import FileSource, read_event_file

# MovieLens 1M codes (README of ML-1M); ML-100K ages are binned into the same bands.
ML1M_AGES: Final = {1: "Under 18", 18: "18-24", 25: "25-34", 35: "35-44", 45: "45-49",
                    50: "50-55", 56: "56+"}  # fmt: skip
ML1M_OCCUPATIONS: Final = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
)  # fmt: skip


@dataclass(frozen=True)
class ImportReport:
    """What an import wrote into the landing folder."""

    dataset: str
    events_file: Path
    n_events: int
    n_users: int
    n_items: int
    n_rejected: int = 0


def _age_band(age: pl.Expr) -> pl.Expr:
    bands = {0: "Under 18", 18: "18-24", 25: "25-34", 35: "35-44", 45: "45-49", 50: "50-55",
             56: "56+"}  # fmt: skip
    return age.cut(list(bands)[1:], labels=list(bands.values()), left_closed=True).cast(pl.String)


def _split(path: Path, sep: str, names: list[str]) -> pl.DataFrame:
    """A ``sep``-separated text file (latin-1, as GroupLens ships them) as string columns."""
    lines = pl.Series("line", path.read_bytes().decode("latin-1").splitlines())
    parts = lines.filter(lines.str.len_chars() > 0).str.split(sep)
    bad = parts.list.len() != len(names)
    if bad.any():
        row = int(bad.arg_true()[0])
        raise ValueError(
            f"{path}: line {row + 1} has {parts[row].len()} fields, expected {len(names)} "
            f"({', '.join(names)})"
        )
    return pl.DataFrame({n: parts.list.get(i) for i, n in enumerate(names)})


def _decade(year: pl.Expr) -> pl.Expr:
    return (year.cast(pl.Int32, strict=False) // 10 * 10).cast(pl.String) + "s"


def _ratings(frame: pl.DataFrame, dataset: str) -> pl.DataFrame:
    """Ratings as contract events; event ids are deterministic (MovieLens has one rating per user
    and movie), so importing twice gives the same events."""
    return frame.select(
        event_id=pl.format("{}-{}-{}", pl.lit(dataset), "user_id", "item_id"),
        user_id="user_id",
        item_id="item_id",
        event_type=pl.lit("rating"),
        event_ts=pl.from_epoch(pl.col("ts").cast(pl.Int64), time_unit="s")
        .dt.replace_time_zone("UTC")
        .dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
        value=pl.col("rating").cast(pl.Float64),
        session_id=pl.lit(None, pl.String),
    )


def movielens_frames(src: Path) -> tuple[str, pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(dataset name, events, users, items) from a MovieLens 100K or 1M folder.

    Raises:
        FileNotFoundError: the folder has neither layout; the message lists the files expected.
    """
    if (src / "u.data").exists():
        ratings = _split(src / "u.data", "\t", ["user_id", "item_id", "rating", "ts"])
        users = _split(src / "u.user", "|", ["user_id", "age", "gender", "occupation", "zip"])
        genres = _split(src / "u.genre", "|", ["genre", "index"])["genre"].to_list()
        items = _split(
            src / "u.item", "|",
            ["item_id", "title", "release_date", "video_release_date", "url", *genres],
        )  # fmt: skip
        flags = [pl.when(pl.col(g) == "1").then(pl.lit(g)) for g in genres]
        items = items.with_columns(
            genres=pl.concat_list(flags).list.drop_nulls(),
            year=pl.col("release_date").str.slice(-4),
        )
        users = users.with_columns(age_band=_age_band(pl.col("age").cast(pl.Int32)))
        name = "ml-100k"
    elif (src / "ratings.dat").exists():
        ratings = _split(src / "ratings.dat", "::", ["user_id", "item_id", "rating", "ts"])
        users = _split(src / "users.dat", "::", ["user_id", "gender", "age", "occupation", "zip"])
        items = _split(src / "movies.dat", "::", ["item_id", "title", "genres"])
        items = items.with_columns(
            genres=pl.col("genres").str.split("|"),
            year=pl.col("title").str.extract(r"\((\d{4})\)\s*$"),
        )
        users = users.with_columns(
            age_band=pl.col("age").cast(pl.Int32).replace_strict(ML1M_AGES, default="unknown"),
            occupation=pl.col("occupation")
            .cast(pl.Int32)
            .replace_strict(dict(enumerate(ML1M_OCCUPATIONS)), default="other"),
        )
        name = "ml-1m"
    else:
        raise FileNotFoundError(
            f"{src}: not a MovieLens folder; expected u.data, u.user, u.item, u.genre (100K) "
            "or ratings.dat, users.dat, movies.dat (1M)"
        )
    users = users.select(
        "user_id", "gender", "age_band", "occupation",
        zip_region=pl.col("zip").str.slice(0, 1),
    )  # fmt: skip
    items = items.select(
        "item_id",
        "title",
        "year",
        decade=_decade(pl.col("year")),
        category=pl.col("genres").list.first(),
        tags=pl.col("genres").list.join("|"),
        available=pl.lit(True),
    )
    return name, _ratings(ratings, name), users, items


def _write_events(events: pl.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with (
        open(tmp, "wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=3, mtime=0) as gz,
    ):
        gz.write(events.write_ndjson().encode())
    tmp.replace(path)
    return path


def import_movielens(src: Path, landing: Path) -> ImportReport:
    """Write a MovieLens folder's ratings and catalogs into ``landing``."""
    name, events, users, items = movielens_frames(src)
    path = _write_events(events, landing / "events" / f"{name}-ratings.jsonl.gz")
    users.write_csv(landing / "users.csv")
    items.write_csv(landing / "items.csv")
    return ImportReport(name, path, events.height, users.height, items.height)


def import_csv(
    path: Path,
    source: FileSource,
    landing: Path,
    *,
    users: Path | None = None,
    items: Path | None = None,
    now: datetime | None = None,
) -> ImportReport:
    """Type a CSV export with ``source``'s column mapping and write it into ``landing``.

    Records that cannot be typed are written beside it to ``landing/rejected/<name>.jsonl`` with
    their reason (nothing is lost). Without catalogs, minimal ones are derived from the ids seen.
    """
    typed = read_event_file(path, source, ingested_at=now or datetime.now(UTC), run_id="import")
    events = pl.DataFrame(typed.events).select(
        C.event_id, C.user_id, C.item_id, C.event_type,
        pl.col(C.event_ts).dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ"), C.value, C.session_id,
    )  # fmt: skip
    stem = path.name.split(".", 1)[0]
    out = _write_events(events, landing / "events" / f"{stem}.jsonl.gz")
    if typed.rejects.num_rows:
        (landing / "rejected").mkdir(parents=True, exist_ok=True)
        pl.DataFrame(typed.rejects).write_ndjson(landing / "rejected" / f"{stem}.jsonl")
    users_frame = (
        pl.read_csv(users, infer_schema=False)
        if users
        else events.select(C.user_id).unique().sort(C.user_id)
    )
    items_frame = (
        pl.read_csv(items, infer_schema=False)
        if items
        else events.select(C.item_id).unique().sort(C.item_id)
    )
    if C.available not in items_frame.columns:
        items_frame = items_frame.with_columns(pl.lit(True).alias(C.available))
    users_frame.write_csv(landing / "users.csv")
    items_frame.write_csv(landing / "items.csv")
    return ImportReport(
        stem, out, events.height, users_frame.height, items_frame.height, typed.rejects.num_rows
    )
