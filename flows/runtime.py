"""Process set-up: library defaults and noise, configured where a process starts (the CLI's
``main``, each flow's first line), never at import time."""

from __future__ import annotations

import logging
import os

_ENV_DEFAULTS = {
    # No telemetry, and room for the ephemeral server to start on a loaded 2-core machine
    # (it takes 10-18 s). Read by Prefect when it is imported: set before that.
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


def configure_environment() -> None:
    """Defaults for variables libraries read at import; a value already set wins."""
    for key, value in _ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)


def configure_logging() -> None:
    """GX logs every metric computation at INFO; the gate reports what matters itself."""
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
