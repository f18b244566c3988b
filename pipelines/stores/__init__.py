"""The stores a stage reads and writes: where each lives, in one object the flow builds once.

Each store has one module here and owns every path and statement on it: :mod:`.lake` (Parquet
zones, catalogs, scored lists; atomic writes), :mod:`.warehouse` (DuckDB, analysts' tables),
:mod:`.serving` (SQLite | PostgreSQL, what online systems read), :mod:`.tracking` (MLflow).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Stores:
    """Where each store lives (built from :class:`flows.settings.Settings`)."""

    landing: Path
    lake: Path
    warehouse: Path
    serving_url: str
    gx_root: Path | None = None  # GX file context and Data Docs under <gx_root>/gx (None: none)
