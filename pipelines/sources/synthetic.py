"""Synthetic interaction logs with learnable structure, written the way applications export them.

Users and items belong to latent taste segments; a user's country, age band and device, and an
item's category, brand, price band and tags, are drawn from segment-specific distributions, so the
attributes carry the taste signal a hybrid model can learn (and use for cold-start users).
Item popularity and user activity are heavy-tailed; each view may run down the funnel
(view > click > add_to_cart > purchase) and some views get an explicit rating. Users sign up and
items are released over the period (cold start); some items stop being available.

A configurable share of defective records is mixed into the daily files, one kind at a time in
rotation (see :data:`DEFECT_KINDS`).

Output layout (:func:`write_landing`)::

    <landing>/events/events-YYYY-MM-DD.jsonl.gz   one file per day, one JSON object per line
    <landing>/users.csv  <landing>/items.csv       catalog snapshots at the end of the period
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Final

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

COUNTRIES: Final = ("US", "DE", "FR", "GB", "BR", "IN", "JP", "ES")
AGE_BANDS: Final = ("18-24", "25-34", "35-44", "45-54", "55+")
DEVICES: Final = ("ios", "android", "web")
CATEGORIES: Final = (
    "books", "music", "games", "outdoor", "kitchen", "fashion", "toys", "electronics",
    "garden", "beauty", "sports", "travel",
)  # fmt: skip
PRICE_BANDS: Final = ("low", "mid", "high", "premium")

DEFECT_KINDS: Final = (
    "malformed_json",
    "missing_user_id",
    "blank_item_id",
    "unknown_event_type",
    "unparseable_timestamp",
    "future_timestamp",
    "negative_value",
    "duplicate_event_id",
    "unknown_item",
)
"""Defects injected by the generator, in rotation; each must end in quarantine with a reason."""

# Funnel probabilities: a click is likelier when the item is in the user's taste segment.
P_CLICK_BASE, P_CLICK_MATCH = 0.18, 0.22
P_CART, P_PURCHASE, P_RATING = 0.35, 0.5, 0.08
EVENTS_PER_VIEW: Final = 1 + 0.29 * (1 + P_CART + P_CART * P_PURCHASE) + P_RATING


class GeneratorParams(BaseModel):
    """Size and shape of a synthetic data set; the same params and seed give the same bytes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_users: int = Field(5000, ge=10)
    n_items: int = Field(1000, ge=10)
    n_events: int = Field(200_000, ge=100)
    days: int = Field(30, ge=2)
    start: date = date(2026, 10, 1)
    seed: int = 42
    n_segments: int = Field(12, ge=2, le=len(CATEGORIES))
    defect_share: float = Field(0.005, ge=0, le=0.5)
    new_user_share: float = Field(0.15, ge=0, le=1, description="Users signing up during period")
    new_item_share: float = Field(0.1, ge=0, le=1, description="Items released during period")
    unavailable_share: float = Field(0.05, ge=0, le=1, description="Items withdrawn in period")
    segment_affinity: float = Field(0.75, ge=0, le=1, description="Share of views in own segment")

    @property
    def end(self) -> date:
        """First day after the period."""
        return self.start + timedelta(days=self.days)


PRESETS: Final[dict[str, GeneratorParams]] = {
    "tiny": GeneratorParams(n_users=300, n_items=120, n_events=12_000, days=14),
    "demo": GeneratorParams(n_users=5000, n_items=1000, n_events=200_000, days=30),
    "large": GeneratorParams(n_users=53_424, n_items=10_000, n_events=6_000_000, days=90),
}


@dataclass(frozen=True)
class Catalogs:
    """Users and items with their hidden segment (``_segment`` is not exported)."""

    users: pl.DataFrame
    items: pl.DataFrame


def _skewed_choice(
    rng: np.random.Generator, preferred: np.ndarray, n_values: int, p: float
) -> np.ndarray:
    """Index ``preferred`` with probability ``p``, otherwise a uniform draw from ``n_values``."""
    keep = rng.random(preferred.shape[0]) < p
    return np.where(keep, preferred % n_values, rng.integers(0, n_values, preferred.shape[0]))


def _day_offsets(rng: np.random.Generator, n: int, new_share: float, days: int) -> np.ndarray:
    """Day each entity appears: most before the period (negative), ``new_share`` during it."""
    offsets = -rng.integers(1, 365, n)
    new = rng.random(n) < new_share
    offsets[new] = rng.integers(1, days, int(new.sum()))
    return offsets


def catalogs(params: GeneratorParams) -> Catalogs:
    """User and item catalogs at the end of the period, one row per user_id / item_id."""
    rng = np.random.default_rng([params.seed, 1])
    s = params.n_segments
    useg = rng.integers(0, s, params.n_users)
    users = pl.DataFrame(
        {
            "user_id": [f"u{i:06d}" for i in range(params.n_users)],
            "country": np.array(COUNTRIES)[_skewed_choice(rng, useg, len(COUNTRIES), 0.7)],
            "age_band": np.array(AGE_BANDS)[_skewed_choice(rng, useg, len(AGE_BANDS), 0.7)],
            "device": np.array(DEVICES)[_skewed_choice(rng, useg, len(DEVICES), 0.6)],
            "signup_day": _day_offsets(rng, params.n_users, params.new_user_share, params.days),
            "_activity": rng.lognormal(0.0, 1.0, params.n_users),
            "_segment": useg,
        }
    )
    iseg = rng.integers(0, s, params.n_items)
    brand_pick = np.where(
        rng.random(params.n_items) < 0.7, iseg, rng.integers(0, s, params.n_items)
    )
    tag_a = rng.integers(0, 4, params.n_items)
    tag_b = rng.integers(0, 4, params.n_items)
    tag_seg = np.where(rng.random(params.n_items) < 0.8, iseg, rng.integers(0, s, params.n_items))
    release = _day_offsets(rng, params.n_items, params.new_item_share, params.days)
    withdrawn = rng.random(params.n_items) < params.unavailable_share
    gone_day = np.where(withdrawn, rng.integers(1, params.days, params.n_items), params.days + 1)
    # Zipf popularity: a random permutation of 1/rank, so popular items exist in every segment.
    popularity = 1.0 / (rng.permutation(params.n_items) + 1.0) ** 1.0
    items = pl.DataFrame(
        {
            "item_id": [f"i{i:05d}" for i in range(params.n_items)],
            "category": np.array(CATEGORIES)[_skewed_choice(rng, iseg, len(CATEGORIES), 0.8)],
            "brand": [
                f"brand{b:02d}{k}"
                for b, k in zip(brand_pick, rng.integers(0, 3, params.n_items), strict=True)
            ],
            "price_band": np.array(PRICE_BANDS)[_skewed_choice(rng, iseg, len(PRICE_BANDS), 0.5)],
            "tags": [f"t{g}a{a}|t{g}b{b}" for g, a, b in zip(tag_seg, tag_a, tag_b, strict=True)],
            "release_day": release,
            "available": ~withdrawn,
            "_gone_day": gone_day,
            "_popularity": popularity,
            "_segment": iseg,
        }
    )
    return Catalogs(users=users, items=items)


def _day_events(
    params: GeneratorParams, cat: Catalogs, day: int, rng: np.random.Generator
) -> pl.DataFrame:
    """Valid events of one day (before defects), one row per event."""
    users, items = cat.users, cat.items
    active_users = np.flatnonzero(users["signup_day"].to_numpy() <= day)
    live = (items["release_day"].to_numpy() <= day) & (items["_gone_day"].to_numpy() > day)
    live_items = np.flatnonzero(live)
    n_views = int(rng.poisson(params.n_events / EVENTS_PER_VIEW / params.days))
    activity = users["_activity"].to_numpy()[active_users]
    u = rng.choice(active_users, n_views, p=activity / activity.sum())
    useg = users["_segment"].to_numpy()[u]
    iseg_all = items["_segment"].to_numpy()
    pop = items["_popularity"].to_numpy()
    # A view is in the user's own segment with probability segment_affinity, else anywhere.
    own = rng.random(n_views) < params.segment_affinity
    it = np.empty(n_views, dtype=np.int64)
    glob_p = pop[live_items] / pop[live_items].sum()
    it[~own] = rng.choice(live_items, int((~own).sum()), p=glob_p)
    for s in range(params.n_segments):
        idx = np.flatnonzero(own & (useg == s))
        cands = live_items[iseg_all[live_items] == s]
        if idx.size == 0:
            continue
        if cands.size == 0:
            cands = live_items
        p = pop[cands] / pop[cands].sum()
        it[idx] = rng.choice(cands, idx.size, p=p)
    match = iseg_all[it] == useg
    ts = (day * 86_400_000 + rng.integers(0, 86_000_000, n_views)).astype(np.int64)
    click = rng.random(n_views) < P_CLICK_BASE + P_CLICK_MATCH * match
    cart = click & (rng.random(n_views) < P_CART)
    purchase = cart & (rng.random(n_views) < P_PURCHASE)
    rating = rng.random(n_views) < P_RATING
    stars = np.clip(np.rint(3.0 + 1.3 * match - 0.6 * ~match + rng.normal(0, 0.8, n_views)), 1, 5)
    parts = []
    for etype, mask, lag_ms, value in (
        ("view", np.ones(n_views, bool), 0, None),
        ("click", click, 5_000, None),
        ("add_to_cart", cart, 60_000, None),
        ("purchase", purchase, 300_000, rng.integers(1, 4, n_views).astype(float)),
        ("rating", rating, 600_000, stars),
    ):
        sel = np.flatnonzero(mask)
        parts.append(
            pl.DataFrame(
                {
                    "u": u[sel],
                    "i": it[sel],
                    "event_type": [etype] * sel.size,
                    "ms": ts[sel] + lag_ms,
                    "value": value[sel] if value is not None else np.full(sel.size, np.nan),
                    "view_no": sel,
                }
            )
        )
    start_ms = int(datetime.combine(params.start, datetime.min.time(), UTC).timestamp() * 1000)
    df = pl.concat(parts).sort("ms", "view_no")
    n = df.height
    return df.select(
        event_id=pl.format("e{}-{}", pl.lit(f"{params.seed}-{day:04d}"), pl.int_range(n)),
        user_id=pl.lit("u") + pl.col("u").cast(pl.String).str.zfill(6),
        item_id=pl.lit("i") + pl.col("i").cast(pl.String).str.zfill(5),
        event_type=pl.col("event_type"),
        event_ts=pl.from_epoch(pl.col("ms") + start_ms, time_unit="ms").dt.strftime(
            "%Y-%m-%dT%H:%M:%S%.3fZ"
        ),
        value=pl.col("value").fill_nan(None),
        session_id=pl.format("s{}-{}", pl.col("u"), pl.lit(day)),
    )


def _defect_lines(df: pl.DataFrame, n: int, first_kind: int, rng: np.random.Generator) -> list[str]:
    """``n`` defective JSON lines built from real rows of the day, kinds in rotation."""
    rows = df.sample(n=min(n, df.height), seed=int(rng.integers(0, 2**31))).to_dicts()
    lines = []
    for k, row in enumerate(rows):
        kind = DEFECT_KINDS[(first_kind + k) % len(DEFECT_KINDS)]
        row = dict(row)
        row["event_id"] = (
            f"{row['event_id']}-d{k}" if kind != "duplicate_event_id" else row["event_id"]
        )
        if kind == "malformed_json":
            lines.append(json.dumps(row)[: -(5 + k % 7)])
            continue
        if kind == "missing_user_id":
            del row["user_id"]
        elif kind == "blank_item_id":
            row["item_id"] = "  "
        elif kind == "unknown_event_type":
            row["event_type"] = "hover"
        elif kind == "unparseable_timestamp":
            row["event_ts"] = "yesterday at 5pm"
        elif kind == "future_timestamp":
            row["event_ts"] = "2199-01-01T00:00:00.000Z"
        elif kind == "negative_value":
            row["event_type"], row["value"] = "purchase", -2.0
        elif kind == "unknown_item":
            row["item_id"] = f"x{k:05d}"
        lines.append(json.dumps(row))
    return lines


def daily_event_lines(params: GeneratorParams, cat: Catalogs) -> Iterator[tuple[date, list[str]]]:
    """One (day, JSON lines) pair per day of the period, defects included."""
    rng = np.random.default_rng([params.seed, 2])
    kind = 0
    for day in range(params.days):
        df = _day_events(params, cat, day, rng)
        n_defects = round(df.height * params.defect_share)
        lines = df.write_ndjson().splitlines()
        if n_defects:
            lines.extend(_defect_lines(df, n_defects, kind, rng))
            kind += n_defects
        yield params.start + timedelta(days=day), lines


def catalog_frames(params: GeneratorParams, cat: Catalogs) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Exported catalogs: hidden columns dropped, day offsets turned into dates."""
    origin = pl.lit(params.start)
    users = cat.users.select(
        "user_id", "country", "age_band", "device",
        signup_date=origin + pl.duration(days=pl.col("signup_day")),
    )  # fmt: skip
    items = cat.items.select(
        "item_id", "category", "brand", "price_band", "tags",
        release_date=origin + pl.duration(days=pl.col("release_day")),
        available="available",
    )  # fmt: skip
    return users, items


@dataclass(frozen=True)
class GeneratedFiles:
    """What :func:`write_landing` wrote."""

    event_files: list[Path]
    users_csv: Path
    items_csv: Path
    n_lines: int


def write_landing(params: GeneratorParams, landing_dir: Path) -> GeneratedFiles:
    """Write the data set as daily gzipped JSON-lines files plus catalogs under ``landing_dir``."""
    events_dir = landing_dir / "events"
    events_dir.mkdir(parents=True, exist_ok=True)
    cat = catalogs(params)
    files, n_lines = [], 0
    for day, lines in daily_event_lines(params, cat):
        path = events_dir / f"events-{day.isoformat()}.jsonl.gz"
        tmp = path.with_suffix(".tmp")
        # mtime=0 keeps the gzip bytes (and so the file checksum) identical across reruns.
        with (
            open(tmp, "wb") as raw,
            gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=3, mtime=0) as gz,
        ):
            gz.write(("\n".join(lines) + "\n").encode())
        tmp.replace(path)
        files.append(path)
        n_lines += len(lines)
    users, items = catalog_frames(params, cat)
    users.write_csv(landing_dir / "users.csv")
    items.write_csv(landing_dir / "items.csv")
    return GeneratedFiles(files, landing_dir / "users.csv", landing_dir / "items.csv", n_lines)
