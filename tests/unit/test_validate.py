from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from pipelines.suites.events import (
    ROW_RULES,
    ValidationParams,
    ValidationThresholds,
    validate_events,
)
from tests.factories import T0, event_rows, events_frame

ITEMS = frozenset({"i1", "i2", "i3"})


def _params(share: float = 0.5) -> ValidationParams:
    return ValidationParams(
        window_end=T0 + timedelta(days=30),
        known_items=ITEMS,
        thresholds=ValidationThresholds(max_quarantine_share=share),
    )


def _with(params: ValidationParams, update: dict[str, object], **limits: float) -> ValidationParams:
    """``params`` with some fields and some thresholds changed."""
    thresholds = params.thresholds.model_copy(update=limits)
    return params.model_copy(update={**update, "thresholds": thresholds})


def _good(n: int) -> pl.DataFrame:
    return events_frame(event_rows([(f"u{k}", "i1", "view", k) for k in range(n)]))


def _defective(reason: str) -> pl.DataFrame:
    """Ten good rows, then one row that breaks exactly the rule named ``reason``."""
    good = _good(10)
    bad = good.tail(1).with_columns(pl.lit("bad").alias("event_id"))
    if reason == "missing_user_id":
        bad = bad.with_columns(pl.lit(None, pl.String).alias("user_id"))
    elif reason == "missing_item_id":
        bad = bad.with_columns(pl.lit("  ").alias("item_id"))
    elif reason == "unknown_event_type":
        bad = bad.with_columns(pl.lit("hover").alias("event_type"))
    elif reason == "future_timestamp":
        bad = bad.with_columns(pl.col("event_ts") + pl.duration(days=400))
    elif reason == "timestamp_out_of_range":
        bad = bad.with_columns(pl.lit(datetime(1970, 1, 1, tzinfo=UTC)).alias("event_ts"))
    elif reason == "negative_value":
        bad = bad.with_columns(pl.lit(-1.0).alias("value"))
    elif reason == "rating_out_of_range":
        bad = bad.with_columns(pl.lit("rating").alias("event_type"), pl.lit(7.0).alias("value"))
    elif reason == "unknown_item":
        bad = bad.with_columns(pl.lit("x9").alias("item_id"))
    elif reason == "duplicate_event_id":
        bad = good.head(1).with_columns(pl.lit("u-other").alias("user_id"))
    return pl.concat([good, bad])


@pytest.mark.parametrize("reason", [rule.reason for rule in ROW_RULES])
def test_each_defect_is_quarantined_with_its_reason(reason: str) -> None:
    batch = _defective(reason)
    result = validate_events(batch, _params())
    assert result.counts_by_reason() == {reason: 1}
    assert result.clean.height + result.quarantined.height == batch.height
    assert result.success
    if reason == "duplicate_event_id":  # the first occurrence is kept
        assert result.quarantined["user_id"].to_list() == ["u-other"]


def test_share_over_threshold_fails_naming_the_expectation() -> None:
    result = validate_events(_defective("unknown_event_type"), _params(share=0.05))
    assert not result.success
    text = "\n".join(result.failures)
    assert "expect_column_values_to_be_in_set on column 'event_type'" in text
    assert "quarantined share 9.09% exceeds max_quarantine_share 5.00%" in text


def test_duplicate_ids_over_threshold_fail_quoting_the_ids_not_their_ranks() -> None:
    # GX sees event ids as their dense rank (RANKED_FOR_GX); the failure still quotes ids.
    result = validate_events(_defective("duplicate_event_id"), _params(share=0.05))
    assert not result.success
    (line,) = [f for f in result.failures if "expect_column_values_to_be_unique" in f]
    assert "on column 'event_id' failed: 2 unexpected" in line
    assert "e.g. ['e0']" in line, line


def test_share_under_threshold_continues() -> None:
    batch = pl.concat([_good(200), _defective("negative_value").tail(1)])
    result = validate_events(batch, _params(share=0.01))
    assert result.success, result.failures
    assert result.quarantined.height == 1
    assert result.clean.height == 200


def test_empty_batch_fails() -> None:
    result = validate_events(_good(3).clear(), _params())
    assert not result.success
    assert any("expect_table_row_count_to_be_between" in f for f in result.failures)


@pytest.mark.parametrize(
    "change",
    [
        lambda f: f.rename({"event_type": "type"}),
        lambda f: f.with_columns(pl.col("value").cast(pl.String)).drop("session_id"),
    ],
    ids=["renamed", "dropped"],
)
def test_schema_change_fails_and_nothing_is_clean(change: object) -> None:
    batch = change(_good(5))  # type: ignore[operator]
    result = validate_events(batch, _params())
    assert not result.success
    assert any("expect_table_columns_to_match_set" in f for f in result.failures)
    assert result.clean.height == 0
    assert result.quarantined.height == 5


def test_passthrough_columns_reach_both_outputs_but_not_gx() -> None:
    batch = _defective("unknown_item").with_columns(pl.lit("part-a").alias("_part"))
    result = validate_events(batch, _params(), passthrough=["_part"])
    assert result.success  # GX did not see the extra column
    assert result.clean["_part"].unique().to_list() == ["part-a"]
    assert result.quarantined["_part"].to_list() == ["part-a"]


def test_unknown_users_over_their_share_stop_the_run_without_quarantine() -> None:
    batch = _good(10)  # users u0..u9
    known = frozenset({"u0", "u1", "u2", "u3", "u4", "u5", "u6"})  # 30% unknown
    params = _with(_params(), {"known_users": known}, max_unknown_user_share=0.2)
    result = validate_events(batch, params)
    assert not result.success
    assert any(
        "expect_column_values_to_be_in_set on column '_user_in_catalog'" in f
        for f in result.failures
    )
    assert result.quarantined.height == 0
    ok = _with(params, {}, max_unknown_user_share=0.4)
    assert validate_events(batch, ok).success


def test_share_of_never_seen_users_is_gated_once_there_is_history() -> None:
    batch = _good(10)
    params = _with(_params(), {"seen_users": frozenset({"u0", "u1"})}, max_new_user_share=0.5)
    assert not validate_events(batch, params).success  # 80% of events by new users
    seen = frozenset(f"u{k}" for k in range(8))
    assert validate_events(batch, params.model_copy(update={"seen_users": seen})).success


def _day(day: int, n: int) -> pl.DataFrame:
    return events_frame(
        event_rows([(f"u{k}", "i1", "view", 24.0 * day + k % 24) for k in range(n)])
    ).with_columns(pl.format("d{}-{}", pl.lit(day), pl.int_range(pl.len())).alias("event_id"))


@pytest.mark.parametrize(("n_new_day", "passes"), [(10, False), (60, True)])
def test_volume_drop_against_the_trailing_week(n_new_day: int, passes: bool) -> None:
    history = frozenset((T0 + timedelta(days=d)).date() for d in range(7))
    late = _day(6, 3)  # late events of a day already in history say nothing about volume
    batch = pl.concat([_day(7, n_new_day), late])
    params = _params().model_copy(update={"trailing_daily_volume": 100.0})
    result = validate_events(batch, params, history_dates=history)
    assert result.success is passes
    if not passes:
        assert any("on column 'n_events'" in f for f in result.failures)
        day = (T0 + timedelta(days=7)).date()
        assert any(f.startswith(f"day {day} has 10 valid events") for f in result.failures)


def test_a_day_with_90_percent_less_volume_fails_naming_that_day() -> None:
    history = frozenset((T0 + timedelta(days=d)).date() for d in range(7))
    batch = pl.concat([_day(7, 100), _day(8, 10), _day(9, 100)])
    params = _params().model_copy(update={"trailing_daily_volume": 100.0})
    result = validate_events(batch, params, history_dates=history)
    assert not result.success
    named = [f for f in result.failures if f.startswith("day ")]
    assert len(named) == 1
    assert named[0].startswith(f"day {(T0 + timedelta(days=8)).date()} has 10 valid events")


def test_future_dated_defects_are_quarantined_and_make_no_day() -> None:
    history = frozenset((T0 + timedelta(days=d)).date() for d in range(7))
    future = _day(7, 1).with_columns(
        pl.lit(datetime(2199, 1, 1, tzinfo=UTC)).alias("event_ts"), pl.lit("f").alias("event_id")
    )
    batch = pl.concat([_day(7, 100), future])
    params = _params().model_copy(update={"trailing_daily_volume": 100.0})
    result = validate_events(batch, params, history_dates=history)
    assert result.success, result.failures  # 2199-01-01 is no day with 1 event
    assert result.counts_by_reason() == {"future_timestamp": 1}


def test_a_day_still_in_progress_is_not_judged_on_volume() -> None:
    history = frozenset((T0 + timedelta(days=d)).date() for d in range(7))
    params = _params().model_copy(
        update={
            "trailing_daily_volume": 100.0,
            "window_end": T0 + timedelta(days=7, hours=2),  # the nightly at 02:00
        }
    )
    today = _day(7, 5).with_columns(pl.col("event_ts").dt.truncate("1d"))  # two hours' worth
    assert validate_events(today, params, history_dates=history).success


def test_file_context_keeps_the_suite_and_builds_data_docs(tmp_path: Path) -> None:
    from pipelines.suites.runner import data_docs_index

    result = validate_events(_defective("unknown_item"), _params(), gx_root=tmp_path)
    assert result.success
    assert (tmp_path / "gx" / "expectations" / "new_events.json").exists()
    index = data_docs_index(tmp_path)
    assert index.exists()
    pages = list((index.parent / "validations").rglob("*.html"))
    assert pages, "a validation result page"
    assert "new_events" in index.read_text()


def test_offline_data_docs_list_every_result_without_scripts_or_cdns(tmp_path: Path) -> None:
    from pipelines.suites.runner import offline_data_docs

    validate_events(_defective("unknown_item"), _params(), gx_root=tmp_path)
    assert not validate_events(_defective("unknown_item"), _params(0.0), gx_root=tmp_path).success
    page = offline_data_docs(tmp_path)
    text = page.read_text()
    assert "<script" not in text  # nothing to run
    assert "http" not in text  # nothing to fetch
    rows = re.findall(r"<tr><td><a href='([^']+)'>", text)
    assert len(rows) >= 2  # both validations of new_events, newest first, linked
    assert all((page.parent / link).exists() for link in rows)
    assert "FAILED" in text
    assert "passed" in text
    assert "expectations/new_events.html" in text
