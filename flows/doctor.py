"""``recs doctor``: every service the configured settings point at, checked and printed as a
table (reachable, its version, the permissions a run needs). Where the preflight of a run
(:mod:`pipelines.stores.preflight`) stops at the first problem, the doctor looks at everything
and says what it found. It changes no store (its probe files are removed), except that an
SQLite MLflow store that does not exist yet is created, as the first run would create it.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import sqlite3
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from urllib.parse import urlsplit

from flows.settings import Settings
from pipelines.stores.urls import redact

OK, FAIL, INFO = "ok", "FAIL", "-"


@dataclass(frozen=True)
class Check:
    """One row of the doctor's table."""

    service: str
    setting: str
    where: str  # redacted
    status: str  # OK, FAIL or INFO (nothing to check)
    detail: str


def _lib(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def _directory(service: str, setting: str, path: Path) -> Check:
    probe = path / f".doctor.{uuid.uuid4().hex}.tmp"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
    except OSError as exc:
        return Check(service, setting, str(path), FAIL, f"not writable ({exc.strerror or exc})")
    finally:
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)
    free = shutil.disk_usage(path).free / 2**30
    return Check(service, setting, str(path), OK, f"writable, {free:,.1f} GiB free")


def _warehouse(path: Path) -> Check:
    import duckdb

    where, setting = str(path), "RECS_WAREHOUSE_PATH"
    if not path.exists():
        return Check("warehouse (DuckDB)", setting, where, INFO,
                     f"not created yet (duckdb {duckdb.__version__})")  # fmt: skip
    try:
        with duckdb.connect(str(path), read_only=True) as con:
            row = con.execute(
                "select count(*) from information_schema.tables where table_schema = 'main'"
            ).fetchone()
    except duckdb.Error as exc:
        return Check("warehouse (DuckDB)", setting, where, FAIL, _one_line(exc))
    tables = row[0] if row else 0
    return Check("warehouse (DuckDB)", setting, where, OK,
                 f"duckdb {duckdb.__version__}, {tables} tables, readable")  # fmt: skip


def _serving(url: str) -> Check:
    setting, where = "RECS_SERVING_URL", redact(url)
    if url.startswith("sqlite"):
        path = Path(urlsplit(url).path.removeprefix("/")) if "///" in url else Path(url)
        directory = _directory("serving store (SQLite)", setting, path.parent)
        if directory.status == FAIL:
            return Check("serving store (SQLite)", setting, where, FAIL, directory.detail)
        return Check("serving store (SQLite)", setting, where, OK,
                     f"sqlite {sqlite3.sqlite_version}, directory writable")  # fmt: skip
    from pipelines.stores.serving import ServingStore

    try:
        with ServingStore(url).connect() as conn, conn.cursor() as cur:
            cur.execute(
                "select current_setting('server_version'), current_user, "
                "has_schema_privilege(current_user, current_schema(), 'CREATE'), "
                "to_regclass('serving_readers') is not null"
            )
            server, user, can_create, has_readers = cur.fetchone() or ("?", "?", False, False)
            readers: list[str] = []
            if has_readers:
                cur.execute(
                    "select role from serving_readers "
                    "where role in (select rolname from pg_roles) order by role"
                )
                readers = [str(r[0]) for r in cur.fetchall()]
    except Exception as exc:  # the driver raises several types for "cannot connect"
        return Check("serving store (PostgreSQL)", setting, where, FAIL, _one_line(exc))
    detail = (
        f"PostgreSQL {server}, user {user}, can create tables: {'yes' if can_create else 'NO'}, "
        f"reader roles: {', '.join(readers) or 'none'}"
    )
    return Check("serving store (PostgreSQL)", setting, where, OK if can_create else FAIL, detail)


def _mlflow(settings: Settings) -> Check:
    from mlflow import MlflowClient

    uri, setting = settings.tracking_uri, "RECS_MLFLOW_TRACKING_URI"
    service = f"MLflow tracking (mlflow {_lib('mlflow')})"
    try:
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        experiments = client.search_experiments(max_results=1000)
        try:
            aliases = client.get_registered_model(settings.registered_model_name).aliases
        except Exception:  # not registered yet: a first night
            aliases = {}
    except Exception as exc:
        return Check(service, setting, redact(uri), FAIL, _one_line(exc))
    champion = aliases.get("champion")
    detail = f"{len(experiments)} experiments; model {settings.registered_model_name!r}: " + (
        f"@champion = version {champion}" if champion else "no @champion yet"
    )
    return Check(service, setting, redact(uri), OK, detail)


def _prefect() -> Check:
    import httpx

    api = os.environ.get("PREFECT_API_URL", "")
    service = f"Prefect API (prefect {_lib('prefect')})"
    if not api:
        return Check(service, "PREFECT_API_URL", "(unset)", INFO,
                     "no server: each run starts a temporary local one")  # fmt: skip
    try:
        health = httpx.get(f"{api.rstrip('/')}/health", timeout=5)
        server = httpx.get(f"{api.rstrip('/')}/admin/version", timeout=5)
        health.raise_for_status()
        server.raise_for_status()
        pools = httpx.post(f"{api.rstrip('/')}/work_pools/filter", json={}, timeout=5)
        pools.raise_for_status()
    except httpx.HTTPError as exc:
        return Check(service, "PREFECT_API_URL", redact(api), FAIL, _one_line(exc))
    names = sorted(str(p.get("name")) for p in pools.json())
    return Check(service, "PREFECT_API_URL", redact(api), OK,
                 f"server {server.json()}, work pools: {', '.join(names) or 'none'}")  # fmt: skip


def _dask(settings: Settings) -> Check:
    service = f"Dask (distributed {_lib('distributed')})"
    if not settings.dask_address:
        workers = settings.dask_local_workers
        what = (
            f"a LocalCluster of {workers} workers per run" if workers else "shards run in process"
        )
        return Check(service, "RECS_DASK_ADDRESS", "(unset)", INFO, what)
    from distributed import Client

    try:
        with Client(settings.dask_address, timeout=5, set_as_default=False) as client:  # type: ignore[no-untyped-call]
            info = client.scheduler_info()
            versions = client.get_versions(check=False)
    except Exception as exc:  # OSError, TimeoutError, CommClosedError ...
        return Check(service, "RECS_DASK_ADDRESS", redact(settings.dask_address), FAIL,
                     _one_line(exc))  # fmt: skip
    workers = info.get("workers", {})
    threads = sum(int(w.get("nthreads", 0)) for w in workers.values())
    scheduler = versions.get("scheduler", {}).get("packages", {}).get("distributed", "?")
    detail = f"scheduler distributed {scheduler}, {len(workers)} workers, {threads} threads"
    where = redact(settings.dask_address)
    return Check(service, "RECS_DASK_ADDRESS", where, OK if workers else FAIL, detail)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


def run_checks(settings: Settings) -> list[Check]:
    """Every check, in the order a night uses the services."""
    checks: list[Callable[[], Check]] = [
        lambda: Check("python", "-", platform.python_version(), INFO,
                      f"lightfm {_lib('lightfm-next')}, polars {_lib('polars')}, "
                      f"great-expectations {_lib('great-expectations')}"),
        lambda: _directory("landing (exports)", "RECS_LANDING_DIR", settings.landing),
        lambda: _directory("lake (Parquet)", "RECS_LAKE_DIR", settings.lake),
        lambda: _warehouse(settings.warehouse),
        lambda: _serving(settings.serving),
        lambda: _directory("MLflow artifacts", "RECS_MLFLOW_ARTIFACTS_DIR",
                           settings.mlflow_artifacts_dir),
        lambda: _mlflow(settings),
        _prefect,
        lambda: _dask(settings),
    ]  # fmt: skip
    out = []
    for check in checks:
        try:
            out.append(check())
        except Exception as exc:  # a check itself must never hide the others
            out.append(Check("?", "-", "-", FAIL, _one_line(exc)))
    return out


def table(checks: list[Check]) -> str:
    """The checks as a Markdown table (readable in a terminal, pasteable into the README)."""
    lines = ["| service | setting | where | status | detail |", "|---|---|---|---|---|"]
    lines += [
        f"| {c.service} | {c.setting} | {c.where} | {c.status} | {c.detail} |" for c in checks
    ]
    return "\n".join(lines)
