"""URLs: a password is redacted wherever a URL is shown; a serving URL the store cannot speak
is refused when the settings are read, before any stage runs."""

from __future__ import annotations

import pytest

from pipelines.stores.serving import ServingStore
from pipelines.stores.urls import check_serving_url, redact


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:pw@db.example:5432/recs", "postgresql://u:***@db.example:5432/recs"),
        ("postgresql://u:p%40ss@h/db?sslmode=require", "postgresql://u:***@h/db?sslmode=require"),
        ("postgresql://:pw@h/db", "postgresql://:***@h/db"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("sqlite:////tmp/serving.sqlite", "sqlite:////tmp/serving.sqlite"),
        ("http://u:pw@[::1]:5000", "http://u:***@[::1]:5000"),
        ("not a url", "not a url"),
    ],
)
def test_redact_hides_only_the_password(url: str, shown: str) -> None:
    assert redact(url) == shown


@pytest.mark.parametrize(
    "url", ["mysql://u:pw@h/db", "sqlite://relative.db", "serving.sqlite", "postgresql:/h/db"]
)
def test_unusable_serving_urls_are_refused_without_the_password(url: str) -> None:
    with pytest.raises(ValueError, match="expected sqlite:///") as raised:
        check_serving_url(url)
    assert "pw" not in str(raised.value)
    with pytest.raises(ValueError, match="expected sqlite:///") as raised:
        _ = ServingStore(url).dialect
    assert "pw" not in str(raised.value)


def test_settings_refuse_a_bad_serving_url_at_start_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flows.settings import Settings

    monkeypatch.setenv("RECS_SERVING_URL", "mysql://app:hunter2@db/recs")
    with pytest.raises(ValueError, match=r"mysql://app:\*\*\*@db/recs") as raised:
        Settings()
    assert "hunter2" not in str(raised.value)
