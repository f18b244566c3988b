"""Small seeded frames with production dtypes, for unit tests."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from features.contracts import EVENTS, conform

T0 = datetime(2026, 10, 1, tzinfo=UTC)


def event_rows(
    specs: Sequence[tuple[str, str, str, float]], *, value: float | None = None, source: str = "f"
) -> list[dict[str, Any]]:
    """One event per (user_id, item_id, event_type, hours after T0)."""
    return [
        {
            "event_id": f"e{n}",
            "user_id": user,
            "item_id": item,
            "event_type": etype,
            "event_ts": T0 + timedelta(hours=hours),
            "value": value,
            "session_id": None,
            "source": source,
            "ingested_at": T0 + timedelta(days=60),
        }
        for n, (user, item, etype, hours) in enumerate(specs)
    ]


def events_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Rows typed to the events contract."""
    return conform(pa.Table.from_pylist(rows), EVENTS, "test events")


def events_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    frame = pl.from_arrow(events_table(rows))
    assert isinstance(frame, pl.DataFrame)
    return frame


def random_events(n: int, n_users: int, n_items: int, seed: int = 0) -> pl.DataFrame:
    """``n`` seeded random views over ``n_users`` x ``n_items`` within 10 days of T0."""
    rng = np.random.default_rng(seed)
    return events_frame(
        event_rows(
            [
                (f"u{u}", f"i{i}", "view", float(h))
                for u, i, h in zip(
                    rng.integers(0, n_users, n),
                    rng.integers(0, n_items, n),
                    rng.integers(0, 240, n),
                    strict=True,
                )
            ]
        )
    )


def users_frame(n: int, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "user_id": [f"u{i}" for i in range(n)],
            "country": rng.choice(["US", "DE"], n),
            "age_band": rng.choice(["18-24", "55+"], n),
            "device": rng.choice(["ios", "web"], n),
        }
    )


def items_frame(n: int, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(n)],
            "category": rng.choice(["books", "games"], n),
            "brand": rng.choice(["a", "b", "c"], n),
            "price_band": rng.choice(["low", "high"], n),
            "tags": [["t1", "t2"] if i % 2 else ["t3"] for i in range(n)],
            "available": [True] * n,
        }
    )


def json_line(**fields: Any) -> str:
    return json.dumps(fields)
