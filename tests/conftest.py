"""Shared fixtures: synthetic data, the real PostgreSQL server, one Prefect harness."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

POSTGRES_URL = os.environ.get("RECS_TEST_POSTGRES_URL", "postgresql://root@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The real PostgreSQL server. Skips when it is unreachable, except in CI (CI=true or
    RECS_REQUIRE_POSTGRES=1), where an unreachable server fails the test instead."""
    import adbc_driver_postgresql.dbapi as postgresql

    try:
        with postgresql.connect(POSTGRES_URL) as conn, conn.cursor() as cur:
            cur.execute("select 1")
            cur.fetchall()
    except Exception as exc:  # the driver raises several error types for "cannot connect"
        if os.environ.get("CI") == "true" or os.environ.get("RECS_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL at {POSTGRES_URL} is required here but unreachable: {exc}")
        pytest.skip(
            f"PostgreSQL at {POSTGRES_URL} unreachable ({exc}); start it with pg_ctlcluster"
        )
    return POSTGRES_URL


@contextmanager
def _fresh_schema(postgres_url: str) -> Iterator[str]:
    """A URL whose search_path is a fresh schema, dropped on exit."""
    import uuid

    import adbc_driver_postgresql.dbapi as postgresql

    schema = f"t_{uuid.uuid4().hex[:10]}"
    with postgresql.connect(postgres_url, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(f"create schema {schema}")
    yield f"{postgres_url}?options=-csearch_path%3D{schema}"
    with postgresql.connect(postgres_url, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(f"drop schema {schema} cascade")


@pytest.fixture
def pg_schema_url(postgres_url: str) -> Iterator[str]:
    """A URL whose search_path is a fresh schema, dropped after the test."""
    with _fresh_schema(postgres_url) as url:
        yield url


@pytest.fixture
def other_pg_schema_url(postgres_url: str) -> Iterator[str]:
    """A second fresh schema, for tests comparing two stores."""
    with _fresh_schema(postgres_url) as url:
        yield url


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect API for the whole session (starting one costs ~10 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def tiny_landing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``tiny`` synthetic preset written once per session (read-only for tests)."""
    from pipelines.sources.synthetic import PRESETS, write_landing

    landing = tmp_path_factory.mktemp("tiny") / "landing"
    write_landing(PRESETS["tiny"], landing)
    return landing


ML100K_PLACES = [
    Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "ml-100k",
    Path("/work/shared/data/ml-100k"),  # where these machines keep it, for a clone elsewhere
]


def find_ml100k() -> Path | None:
    """The shared MovieLens 100K copy: ``RECS_ML100K``, else beside the checkout, else the
    machines' shared folder. Never copied into the project (GroupLens terms)."""
    places = [Path(os.environ["RECS_ML100K"])] if os.environ.get("RECS_ML100K") else []
    return next((p for p in [*places, *ML100K_PLACES] if (p / "u.data").exists()), None)


@pytest.fixture(scope="session")
def ml100k() -> Path:
    """The shared MovieLens 100K copy. Missing it is a failure in CI (CI=true), a skip with the
    reason elsewhere."""
    found = find_ml100k()
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"MovieLens 100K copy not found in {ML100K_PLACES} (or RECS_ML100K)")
        pytest.skip(f"MovieLens 100K copy not found in {ML100K_PLACES} (or RECS_ML100K)")
    return found
