"""One test per features/sql file: 5-20 hand-written rows, the expected output written out."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest

from features import build
from features.build import FEATURE_TABLES, register_frames, run_sql, sql_text
from features.signal import SignalParams
from models.base import TrainingData
from models.baselines import PopularityParams, popular_items
from tests.factories import T0, event_rows, events_frame

AS_OF = T0 + timedelta(days=2)  # hours 0..47 are training, 48.. are after as_of
HOLDOUT_END = AS_OF + timedelta(days=1)

EVENTS = [
    ("u1", "i1", "view", 1),
    ("u1", "i1", "click", 2),
    ("u1", "i2", "purchase", 3),
    ("u2", "i1", "view", 5),
    ("u2", "i3", "add_to_cart", 6),
    ("u3", "i2", "view", 40),
    ("u1", "i3", "view", 50),  # after as_of: holdout for u1 (new item)
    ("u1", "i1", "view", 51),  # after as_of, but i1 already seen: not new
    ("u2", "i2", "click", 60),  # holdout for u2
    ("u9", "i1", "view", 55),  # after as_of, no history: not in holdout
    ("u2", "i4", "view", 80),  # after holdout_end
]
USERS = pl.DataFrame(
    {
        "user_id": ["u1", "u2", "u4"],
        "country": ["US", "DE", "US"],
        "age_band": ["18-24", "55+", None],
        "device": ["ios", "web", "web"],
    }
)
ITEMS = pl.DataFrame(
    {
        "item_id": ["i1", "i2", "i3", "i4"],
        "category": ["books", "games", "books", "toys"],
        "brand": ["a", "b", "a", "c"],
        "price_band": ["low", "low", "high", "mid"],
        "tags": ["t1|t2", None, "t3", ""],
        "available": [True, True, False, True],
    }
)


@pytest.fixture
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    con = duckdb.connect()
    rating = events_frame(event_rows([("u3", "i3", "rating", 41)], value=5.0))
    events = pl.concat(
        [events_frame(event_rows(EVENTS)), rating.with_columns(pl.lit("r").alias("event_id"))]
    )
    register_frames(con, clean_events=events, users=USERS, items=ITEMS)
    yield con
    con.close()


def _run(con: duckdb.DuckDBPyConnection, name: str, **params: object) -> pl.DataFrame:
    frame = pl.from_arrow(run_sql(con, name, **params))
    assert isinstance(frame, pl.DataFrame)
    return frame


def test_every_sql_file_has_a_test_here() -> None:
    tested = {"interactions", "holdout", "user_features", "item_features"}
    assert set(FEATURE_TABLES) == tested
    files = {p.stem for p in (Path(build.__file__).parent / "sql").glob("*.sql")}
    assert files == tested | {"last_positives"}
    for name in FEATURE_TABLES:
        assert sql_text(name).lower().count("select * from final") == 1


SIGNAL = SignalParams().sql_params()


def test_interactions(con: duckdb.DuckDBPyConnection) -> None:
    got = _run(con, "interactions", as_of=AS_OF, **SIGNAL).select(
        "user_id", "item_id", "n_events", "weight", "positive"
    )
    # view 1 + click 2; purchase 8; add_to_cart 4; a 5-star rating (5 - 4 + 1) x 1.
    assert got.rows() == [
        ("u1", "i1", 2, 3.0, True),
        ("u1", "i2", 1, 8.0, True),
        ("u2", "i1", 1, 1.0, True),
        ("u2", "i3", 1, 4.0, True),
        ("u3", "i2", 1, 1.0, True),
        ("u3", "i3", 1, 2.0, True),
    ]


def test_interactions_low_ratings_decay_and_capped_repeats() -> None:
    con = duckdb.connect()
    low = events_frame(event_rows([("u1", "i1", "rating", 1)], value=2.0))
    views = events_frame(event_rows([("u1", "i2", "view", h) for h in (0, 24, 44, 46)]))
    events = pl.concat([low, views.with_columns(pl.format("v{}", pl.col("event_id")))])
    register_frames(con, clean_events=events, users=USERS, items=ITEMS)
    signal = SignalParams(half_life_days=1.0, max_repeats=2, type_weights={"view": 2.0})
    got = _run(con, "interactions", as_of=AS_OF, **signal.sql_params())
    # A 2-star rating is seen but no positive. Of four views only the latest two count (hours
    # 46 and 44: 2 and 4 hours before as_of), each 2 x 0.5 ** (hours / 24).
    assert got.select("user_id", "item_id", "n_events", "positive").rows() == [
        ("u1", "i1", 1, False),
        ("u1", "i2", 4, True),
    ]
    expected = 2 * 0.5 ** (2 / 24) + 2 * 0.5 ** (4 / 24)
    assert got["weight"].to_list() == pytest.approx([0.0, expected])
    con.close()


def test_holdout(con: duckdb.DuckDBPyConnection) -> None:
    got = _run(con, "holdout", start=AS_OF, end=HOLDOUT_END, **SIGNAL)
    # u1's i1 was seen before the window; u9 has no history: a cold user; hour 80 is after it.
    assert got.rows() == [
        ("u1", "i3", 1, "warm", False, "window"),
        ("u2", "i2", 1, "warm", False, "window"),
        ("u9", "i1", 1, "cold", False, "window"),
    ]
    assert got.columns == ["user_id", "item_id", "n_events", "user_segment", "new_item", "truth"]


def test_last_positives() -> None:
    """Leave-last-out truth: warm users without a positive in the window, with two or more
    positive pairs before it, keep their latest share of pairs as truth."""
    con = duckdb.connect()
    views = events_frame(
        event_rows(
            [
                *[("u1", f"i{n}", "view", 2 * n - 1) for n in range(1, 6)],  # i5 at hour 9
                ("u1", "i5", "view", 11),  # a repeat: i5's latest positive is hour 11
                ("u2", "i1", "view", 2),
                ("u2", "i2", "view", 2),  # a tie on time: the larger item id is the later
                ("u2", "i5", "view", 1),  # i5 is known from u2, beside u1's held pair
                ("u3", "i1", "view", 4),  # one positive pair: not eligible
                ("u4", "i1", "view", 1),
                ("u4", "i2", "view", 2),
                ("u4", "i3", "view", 50),  # a positive in the window: judged there
                ("u5", "i1", "view", 5),
                ("u5", "i7", "view", 6),  # only u5 ever touched i7: a new item once held out
            ]
        )
    )
    low = events_frame(event_rows([("u2", "i6", "rating", 10)], value=2.0))  # not a positive
    events = pl.concat([views, low.with_columns(pl.lit("low").alias("event_id"))])
    register_frames(con, clean_events=events, users=USERS, items=ITEMS)
    params = {"start": AS_OF, "end": HOLDOUT_END, "min_rating": 4.0, "max_users": 10}
    got = _run(con, "last_positives", share=0.2, **params)
    assert got.columns == ["user_id", "item_id", "n_events", "user_segment", "new_item", "truth"]
    assert got.rows() == [
        ("u1", "i5", 2, "warm", False, "last_positives"),
        ("u2", "i2", 1, "warm", False, "last_positives"),  # i6 (hour 10): a low rating
        ("u5", "i7", 1, "warm", True, "last_positives"),
    ]
    # half of u1's five pairs, rounded up: the three latest
    half = _run(con, "last_positives", share=0.5, **params)
    assert half.filter(pl.col("user_id") == "u1")["item_id"].to_list() == ["i3", "i4", "i5"]
    assert half.filter(pl.col("user_id") == "u2")["item_id"].to_list() == ["i1", "i2"]
    # at most max_users users, the first by md5(user_id)
    first = min(["u1", "u2", "u5"], key=lambda u: hashlib.md5(u.encode()).hexdigest())
    one = _run(con, "last_positives", share=0.2, **{**params, "max_users": 1})
    assert one["user_id"].unique().to_list() == [first]
    con.close()


def test_user_features(con: duckdb.DuckDBPyConnection) -> None:
    got = _run(con, "user_features", as_of=AS_OF)
    assert got.to_dicts() == [
        {"user_id": "u1", "country": "US", "age_band": "18-24", "device": "ios",
         "n_events": 3, "n_items": 2, "activity_band": "low"},
        {"user_id": "u2", "country": "DE", "age_band": "55+", "device": "web",
         "n_events": 2, "n_items": 2, "activity_band": "low"},
        {"user_id": "u3", "country": None, "age_band": None, "device": None,
         "n_events": 2, "n_items": 2, "activity_band": "low"},
        {"user_id": "u4", "country": "US", "age_band": None, "device": "web",
         "n_events": 0, "n_items": 0, "activity_band": "none"},
    ]  # fmt: skip


def test_item_features(con: duckdb.DuckDBPyConnection) -> None:
    got = _run(con, "item_features", as_of=AS_OF).select("item_id", "tags", "available", "n_users")
    assert got.to_dicts() == [
        {"item_id": "i1", "tags": ["t1", "t2"], "available": True, "n_users": 2},
        {"item_id": "i2", "tags": [""], "available": True, "n_users": 2},
        {"item_id": "i3", "tags": ["t3"], "available": False, "n_users": 2},
        {"item_id": "i4", "tags": [""], "available": True, "n_users": 0},
    ]


def test_missing_parameter_names_the_file(con: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(KeyError, match=r"holdout.sql needs parameter\(s\) \['end'\]"):
        run_sql(con, "holdout", start=AS_OF, min_rating=4.0)


def test_popular_items_from_the_feature_tables(con: duckdb.DuckDBPyConnection) -> None:
    """``popular_items`` is derived in Python (one definition of popular) from these tables."""
    data = TrainingData(
        _run(con, "interactions", as_of=AS_OF, **SIGNAL),
        _run(con, "user_features", as_of=AS_OF),
        _run(con, "item_features", as_of=AS_OF),
        AS_OF,
    )
    available = data.items.filter(pl.col("available"))["item_id"]
    got = popular_items(data, PopularityParams(window_days=14), 2, available)
    # i3 is unavailable; i1 and i2 both have 2 users (ties break by item_id). u1 is
    # US/18-24/ios, u2 DE/55+/web; u3 is not in the catalog (global and its activity band only);
    # u4 has no events. u1, u2 and u3 all have fewer than 10 events: activity band "low".
    assert got.rows() == [
        ("activity_band:low", 1, "i1", 2 / 3),  # shares of the segment's 3 active users
        ("activity_band:low", 2, "i2", 2 / 3),
        ("age_band:18-24", 1, "i1", 1.0),
        ("age_band:18-24", 2, "i2", 1.0),
        ("age_band:55+", 1, "i1", 1.0),
        ("country:DE", 1, "i1", 1.0),
        ("country:US", 1, "i1", 1.0),
        ("country:US", 2, "i2", 1.0),
        ("device:ios", 1, "i1", 1.0),
        ("device:ios", 2, "i2", 1.0),
        ("device:web", 1, "i1", 1.0),
        ("global", 1, "i1", 2 / 3),
        ("global", 2, "i2", 2 / 3),
    ]
    recent = popular_items(data, PopularityParams(window_days=1), 2, available)
    # Only u3's view of i2 (hour 40) falls in the last day before as_of (hour 48).
    assert recent.filter(pl.col("segment") == "global").rows() == [("global", 1, "i2", 1.0)]
