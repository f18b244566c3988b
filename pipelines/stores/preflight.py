"""Fail early: before the first stage, every store a run writes is checked (directories
writable, the serving store and the MLflow tracking store reachable with the scheme we speak), so
a wrong setting costs a second, not five stages and a model registration. Errors are one line
naming the setting and what was expected; URLs appear redacted."""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from pipelines.stores import Stores
from pipelines.stores.serving import ServingStore
from pipelines.stores.tracking import Tracking
from pipelines.stores.urls import redact

TRACKING_SCHEMES = ("sqlite", "file", "http", "https", "postgresql", "mysql", "databricks")
"""Tracking URI schemes MLflow serves runs from (a bare path is a ``file`` store)."""


class PreflightError(ValueError):
    """A setting the run cannot work with, found before the first stage."""


def _writable(what: str, directory: Path) -> None:
    """``directory`` exists (created if need be) and takes a file."""
    probe = directory / f".preflight.{uuid.uuid4().hex}.tmp"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
    except OSError as exc:
        raise PreflightError(
            f"{what} {directory}: expected a writable directory ({exc.strerror or exc})"
        ) from None
    finally:
        with contextlib.suppress(OSError):  # (not there when the directory could not be)
            probe.unlink(missing_ok=True)


def check_stores(stores: Stores, tracking: Tracking | None = None) -> None:
    """Check every store of a run before its first stage.

    Raises:
        PreflightError: naming the store, its (redacted) location and what was expected.
    """
    _writable("lake directory", stores.lake)
    _writable("warehouse directory", stores.warehouse.parent)
    if stores.gx_root is not None:
        _writable("Great Expectations directory", stores.gx_root)
    serving = ServingStore(stores.serving_url)
    if serving.dialect == "sqlite":
        _writable("serving store directory", serving.sqlite_path.parent)
    else:
        try:
            with serving.connect() as conn, conn.cursor() as cur:
                cur.execute("select 1")
                cur.fetchall()
        except Exception as exc:  # the driver raises several types for "cannot connect"
            reason = " ".join(str(exc).split())[:300]
            raise PreflightError(
                f"serving store {redact(stores.serving_url)}: cannot connect ({reason})"
            ) from None
    if tracking is not None:
        _check_tracking(tracking)


def _check_tracking(tracking: Tracking) -> None:
    uri = tracking.tracking_uri
    scheme = urlsplit(uri).scheme or "file"
    if scheme not in TRACKING_SCHEMES:
        raise PreflightError(
            f"MLflow tracking URI {redact(uri)!r}: expected one of the schemes "
            f"{', '.join(TRACKING_SCHEMES)} (RECS_MLFLOW_TRACKING_URI)"
        )
    if scheme == "sqlite":
        path = uri.removeprefix("sqlite:///")  # sqlite:////abs or sqlite:///relative
        if path and path != ":memory:":
            _writable("MLflow tracking store directory", Path(path).parent)
    _writable("MLflow artifacts directory", tracking.artifacts_dir)
