from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from flows.settings import PROJECT_ROOT, Settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("RECS_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # no stray recs.toml


def test_embedded_defaults() -> None:
    s = Settings()
    assert s.landing == PROJECT_ROOT / "data" / "landing"
    assert s.lake == PROJECT_ROOT / "data" / "lake"
    assert s.warehouse == PROJECT_ROOT / "data" / "warehouse.duckdb"
    assert s.serving == f"sqlite:///{PROJECT_ROOT / 'data' / 'serving.sqlite'}"
    assert s.tracking_uri == f"sqlite:///{PROJECT_ROOT / 'mlflow' / 'mlflow.db'}"
    assert s.tracking_uri.startswith("sqlite:////")  # absolute: MLflow 3 needs it


def test_env_overrides_and_derived_paths(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RECS_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("RECS_SERVING_URL", "postgresql://root@127.0.0.1/test")
    monkeypatch.setenv("RECS_TOP_K", "20")
    s = Settings()
    assert s.landing == tmp_path / "d" / "landing"
    assert s.warehouse == tmp_path / "d" / "warehouse.duckdb"
    assert s.serving == "postgresql://root@127.0.0.1/test"
    assert s.top_k == 20


def test_toml_file_is_read_and_env_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "conf.toml").write_text('top_k = 5\nholdout_days = 3\nlanding_dir = "/srv/in"\n')
    monkeypatch.setenv("RECS_CONFIG", str(tmp_path / "conf.toml"))
    monkeypatch.setenv("RECS_HOLDOUT_DAYS", "4")
    s = Settings()
    assert (s.top_k, s.holdout_days, s.landing) == (5, 4, Path("/srv/in"))


def test_unknown_or_invalid_settings_are_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "recs.toml").write_text("topk = 5\n")
    with pytest.raises(ValidationError, match="topk"):
        Settings()
    (tmp_path / "recs.toml").unlink()
    monkeypatch.setenv("RECS_TOP_K", "0")
    with pytest.raises(ValidationError, match="top_k"):
        Settings()


def test_sources_from_toml(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "recs.toml").write_text(
        """
[[sources]]
kind = "files"
name = "partner"
format = "csv"
[sources.mapping]
user_id = "customer"
event_id = ""
event_type = ""
default_event_type = "purchase"

[[sources]]
kind = "postgres"
name = "orders"
url = "postgresql://root@127.0.0.1/test"
table = "public.events"
lookback_hours = 48
"""
    )
    files, pg = Settings().sources
    assert files.kind == "files"
    assert files.format == "csv"
    assert files.mapping.user_id == "customer"
    assert files.mapping.event_id is None
    assert files.mapping.event_type is None
    assert pg.kind == "postgres"
    assert pg.lookback_hours == 48


def test_a_source_without_event_types_needs_a_default(tmp_path: Path) -> None:
    (tmp_path / "recs.toml").write_text(
        '[[sources]]\nkind = "files"\n[sources.mapping]\nevent_type = ""\n'
    )
    with pytest.raises(ValidationError, match="default_event_type"):
        Settings()
