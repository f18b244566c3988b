"""Process set-up: library defaults and noise, configured where a process starts (the CLI's
``main``, each flow's first line), never at import time."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

_ENV_DEFAULTS = {
    # No telemetry, and room for the ephemeral server to start on a loaded 2-core machine
    # (it takes 10-18 s). Read by Prefect when it is imported: set before that.
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    # The stages' own log lines (each epoch's validation metric, ...) in the flow run's logs.
    "PREFECT_LOGGING_EXTRA_LOGGERS": "pipelines",
}


def configure_environment() -> None:
    """Defaults for variables libraries read at import; a value already set wins."""
    for key, value in _ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)


_CONSOLE_TRACEBACKS = {"show": True}


def hide_console_tracebacks() -> None:
    """For the CLI without ``--debug``: Prefect's console lines keep their one-line message but
    not the traceback under it (the Prefect UI's logs keep the whole record)."""
    _CONSOLE_TRACEBACKS["show"] = False


class _OneLineFormatter(logging.Formatter):
    """Formats a record as ``inner`` does, without its exception or stack text, and leaves the
    record as it was for the other handlers (Prefect's API handler keeps the traceback)."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            return self.inner.format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


def configure_logging() -> None:
    """GX logs every metric computation at INFO; the gate reports what matters itself; the
    stages' own INFO lines reach the flow run's logs. From the CLI without ``--debug``, console
    log lines carry no tracebacks."""
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    # Dask logs every client connection and scheduler step at INFO (RECS_DASK_*).
    logging.getLogger("distributed").setLevel(logging.WARNING)
    # The stages' progress lines (each epoch's validation metric): Prefect gives the logger its
    # API handler (PREFECT_LOGGING_EXTRA_LOGGERS) but not a level, and the root's is WARNING.
    logging.getLogger("pipelines").setLevel(logging.INFO)
    if _CONSOLE_TRACEBACKS["show"]:
        return
    for name in ("prefect", "prefect.flow_runs", "prefect.task_runs", ""):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(
                handler.formatter, _OneLineFormatter
            ):
                handler.setFormatter(_OneLineFormatter(handler.formatter or logging.Formatter()))


OWNER = "RECS_CLI_PID"
"""Set by every ``recs`` command to its pid; what it starts (Prefect's ephemeral API server)
inherits it, which is how the next command recognises what a killed one left running."""


def claim_children() -> None:
    """Mark the processes this command will start as its own (:data:`OWNER`)."""
    os.environ[OWNER] = str(os.getpid())


def _alive(pid: int, proc: Path) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    try:  # a zombie (killed, its parent has not waited for it yet) is not alive
        return (proc / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def reap_orphans(proc: Path = Path("/proc")) -> list[int]:
    """Stop (SIGTERM) the processes a killed ``recs`` command left behind: those carrying
    :data:`OWNER` whose owner is gone (``kill -9`` of the CLI orphans Prefect's ephemeral
    server, which would otherwise run forever). Linux (``/proc``) only; elsewhere a no-op.
    Returns the pids stopped."""
    if not proc.is_dir():
        return []
    mine, stopped = os.getpid(), []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == mine:
            continue
        try:
            variables = (entry / "environ").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        prefix = f"{OWNER}=".encode()
        owner = next((v[len(prefix) :] for v in variables if v.startswith(prefix)), b"")
        if not owner.isdigit() or int(owner) == mine or _alive(int(owner), proc):
            continue
        try:
            os.kill(int(entry.name), signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            continue
        stopped.append(int(entry.name))
    return stopped
