from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import polars as pl

from bench.ceiling import ceiling_lists
from pipelines.sources.synthetic import (
    PRESETS,
    GeneratorParams,
    catalogs,
    daily_event_lines,
    write_landing,
)

SMALL = GeneratorParams(n_users=200, n_items=60, n_events=4000, days=5, seed=7)


def _files_bytes(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_writes_identical_bytes(tmp_path: Path) -> None:
    write_landing(SMALL, tmp_path / "a")
    write_landing(SMALL, tmp_path / "b")
    assert _files_bytes(tmp_path / "a") == _files_bytes(tmp_path / "b")


def test_different_seed_writes_different_events(tmp_path: Path) -> None:
    write_landing(SMALL, tmp_path / "a")
    write_landing(SMALL.model_copy(update={"seed": 8}), tmp_path / "b")
    a, b = _files_bytes(tmp_path / "a"), _files_bytes(tmp_path / "b")
    assert a.keys() == b.keys()
    assert a["events-2026-10-01.jsonl.gz"] != b["events-2026-10-01.jsonl.gz"]


def test_layout_one_gzipped_jsonl_file_per_day_plus_catalogs(tmp_path: Path) -> None:
    out = write_landing(SMALL, tmp_path)
    assert [p.name for p in out.event_files] == [
        f"events-2026-10-0{d}.jsonl.gz" for d in range(1, 6)
    ]
    users, items = pl.read_csv(out.users_csv), pl.read_csv(out.items_csv)
    assert users.height == 200
    assert users["user_id"].n_unique() == 200
    assert items.height == 60
    assert "available" in items.columns
    assert set(users.columns) >= {"country", "age_band", "device"}
    assert set(items.columns) >= {"category", "brand", "price_band", "tags"}
    with gzip.open(out.event_files[0], "rt") as f:
        first = json.loads(f.readline())
    assert set(first) == {
        "event_id", "user_id", "item_id", "event_type", "event_ts", "value", "session_id"
    }  # fmt: skip
    assert len(gzip.decompress(out.event_files[0].read_bytes()).splitlines()) > 100


def test_event_volume_and_funnel_shape() -> None:
    params = PRESETS["tiny"]
    lines = [line for _, day in daily_event_lines(params, catalogs(params)) for line in day]
    assert 0.85 * params.n_events < len(lines) < 1.15 * params.n_events
    n = Counter(json.loads(x).get("event_type") for x in lines if x.endswith("}"))
    assert n["view"] > n["click"] > n["add_to_cart"] > n["purchase"]
    assert n["rating"] > 0


def test_every_defect_kind_is_injected_at_the_configured_share() -> None:
    params = SMALL.model_copy(update={"defect_share": 0.05})
    lines = [line for _, day in daily_event_lines(params, catalogs(params)) for line in day]
    malformed = [x for x in lines if not x.endswith("}")]
    docs = [json.loads(x) for x in lines if x.endswith("}")]
    assert malformed, "malformed_json"
    assert any("user_id" not in d for d in docs), "missing_user_id"
    assert any(d.get("item_id") == "  " for d in docs), "blank_item_id"
    assert any(d.get("event_type") == "hover" for d in docs), "unknown_event_type"
    assert any(d.get("event_ts") == "yesterday at 5pm" for d in docs), "unparseable_timestamp"
    assert any(d.get("event_ts", "").startswith("2199") for d in docs), "future_timestamp"
    assert any((d.get("value") or 0) < 0 for d in docs), "negative_value"
    assert any(d.get("item_id", "").startswith("x") for d in docs), "unknown_item"
    ids = [d["event_id"] for d in docs]
    assert len(ids) != len(set(ids)), "duplicate_event_id"
    # Day 0 is drawn before any defect consumes the random stream: compare it exactly.
    clean = SMALL.model_copy(update={"defect_share": 0.0})
    _, clean_day0 = next(daily_event_lines(clean, catalogs(clean)))
    _, dirty_day0 = next(daily_event_lines(params, catalogs(params)))
    assert dirty_day0[: len(clean_day0)] == clean_day0
    assert len(dirty_day0) - len(clean_day0) == round(0.05 * len(clean_day0))


def test_taste_segments_show_in_attributes() -> None:
    """Users of one segment share a country far more often than chance: attributes carry signal."""
    cat = catalogs(PRESETS["demo"])
    top_share = (
        cat.users.group_by("_segment", "country").len()
        .with_columns(share=pl.col("len") / pl.col("len").sum().over("_segment"))
        .group_by("_segment").agg(pl.col("share").max())["share"]
    )  # fmt: skip
    lowest = top_share.min()
    assert isinstance(lowest, float)
    assert lowest > 0.5  # chance is 1/8


def test_cold_start_and_unavailable_items_exist() -> None:
    cat = catalogs(PRESETS["demo"])
    assert (cat.users["signup_day"] > 0).sum() > 0
    assert (cat.items["release_day"] > 0).sum() > 0
    assert (~cat.items["available"]).sum() > 0


def test_the_ceiling_ranks_by_the_generators_view_probability() -> None:
    """bench.ceiling's lists: affinity x same-segment share + (1 - affinity) x global share."""
    items = pl.DataFrame(
        {"item_id": ["a", "b", "c", "d"], "_popularity": [1.0, 0.5, 0.4, 0.1],
         "_segment": [0, 1, 0, 1]}
    )  # fmt: skip
    users = pl.DataFrame({"user_id": ["u0", "u1", "u2"], "_segment": [0, 1, 0]})
    window = pl.DataFrame({"user_id": ["u0", "u1"]})
    seen = pl.DataFrame({"user_id": ["u0", "u2"], "item_id": ["a", "c"]})
    got = ceiling_lists(window, seen, items, users, affinity=0.75, k=2)
    # u0 (segment 0): a 0.661, c 0.264, b 0.063, d 0.013; a was seen. u1 (segment 1): b 0.688,
    # d 0.138, a 0.125 - not popularity's order. u2 is not a window user.
    assert got.rows() == [("u0", "c", 1), ("u0", "b", 2), ("u1", "b", 1), ("u1", "d", 2)]
