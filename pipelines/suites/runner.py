"""Run a Great Expectations suite on a pandas batch and flatten its verdict.

GX runs in SUMMARY mode (COMPLETE with millions of failing ids is slow and huge). Without a root
the context is ephemeral; with one, a file context keeps the suites, results and Data Docs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import cast

import great_expectations as gx
import great_expectations.execution_engine.pandas_execution_engine as _gx_pandas_engine
import pandas as pd
from great_expectations.checkpoint import UpdateDataDocsAction
from great_expectations.core import ExpectationSuiteValidationResult, ExpectationValidationResult
from great_expectations.core.run_identifier import RunIdentifier
from great_expectations.data_context.types.base import ProgressBarsConfig
from great_expectations.data_context.types.resource_identifiers import (
    ExpectationSuiteIdentifier,
    ValidationResultIdentifier,
)
from great_expectations.datasource.fluent import PandasDatasource

from pipelines.suites import ValidationError
from pipelines.suites.docs import offline_index_path, write_offline_index

__all__ = [
    "ValidationError",
    "data_docs_index",
    "keep_added_up",
    "offline_data_docs",
    "run_expectations",
]


@contextmanager
def _no_batch_fingerprint() -> Iterator[None]:
    # GX fingerprints every pandas batch below HASH_THRESHOLD bytes by hashing all of it, twice
    # per validation: ~10 s of a 30 s run on 6M events, for a batch marker nothing here reads.
    # Skipped for the duration of one validation only (GX 1.24, pinned in requirements.lock;
    # re-check on upgrade).
    before = _gx_pandas_engine.HASH_THRESHOLD
    _gx_pandas_engine.HASH_THRESHOLD = 0
    try:
        yield
    finally:
        _gx_pandas_engine.HASH_THRESHOLD = before


@dataclass(frozen=True)
class ExpectationOutcome:
    """One expectation's verdict, flattened for reports and the warehouse."""

    expectation: str
    column: str | None
    success: bool
    unexpected_count: int | None
    unexpected_percent: float | None
    error: str | None = None
    observed: object = None
    examples: list[object] = field(default_factory=list)
    element_count: int | None = None  # rows the expectation looked at (after a row condition)
    missing_count: int | None = None  # of which null (None: nulls count as rows considered)


def data_docs_index(gx_root: Path) -> Path:
    """The Data Docs page a file context under ``gx_root`` builds (it needs internet access to
    show anything: see :func:`offline_data_docs`)."""
    return gx_root / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"


def offline_data_docs(gx_root: Path) -> Path:
    """The index of the Data Docs that opens offline (:mod:`pipelines.suites.docs`)."""
    return offline_index_path(data_docs_index(gx_root).parent)


def run_expectations(
    batch: pd.DataFrame,
    build_suite: Callable[[], gx.ExpectationSuite],
    gx_root: Path | None = None,
) -> list[ExpectationOutcome]:
    """Validate a pandas batch with GX in SUMMARY mode.

    ``build_suite`` is called once the context exists (GX requires an active context to build
    expectations). Without ``gx_root`` the context is ephemeral. With it, a file context lives in
    ``<gx_root>/gx``: the suite (defined in code, stored as JSON on every run), a validation
    definition and a checkpoint named after the suite are kept there, every result is stored,
    and the checkpoint rebuilds the Data Docs (:func:`data_docs_index`).
    """
    with _no_batch_fingerprint():
        result = _validate(batch, build_suite, gx_root)
    return _outcomes(result)


def _validate(
    batch: pd.DataFrame, build_suite: Callable[[], gx.ExpectationSuite], gx_root: Path | None
) -> gx.core.ExpectationSuiteValidationResult:
    if gx_root is None:
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        suite = build_suite()
        asset = context.data_sources.add_pandas("recs").add_dataframe_asset(suite.name)
        definition = asset.add_batch_definition_whole_dataframe("batch")
        result = definition.get_batch(batch_parameters={"dataframe": batch}).validate(
            suite, result_format="SUMMARY"
        )
    else:
        files = gx.get_context(mode="file", project_root_dir=str(gx_root))
        files.variables.progress_bars = ProgressBarsConfig(globally=False)
        suite = files.suites.add_or_update(build_suite())
        source = cast(
            PandasDatasource,
            files.data_sources.get("recs")
            if "recs" in files.data_sources.all()
            else files.data_sources.add_pandas("recs"),
        )
        names = {a.name for a in source.assets}
        asset = (
            source.get_asset(suite.name)
            if suite.name in names
            else source.add_dataframe_asset(suite.name)
        )
        definition = (
            asset.get_batch_definition("batch")
            if any(d.name == "batch" for d in asset.batch_definitions)
            else asset.add_batch_definition_whole_dataframe("batch")
        )
        validation = files.validation_definitions.add_or_update(
            gx.ValidationDefinition(name=suite.name, data=definition, suite=suite)
        )
        checkpoint = files.checkpoints.add_or_update(
            gx.Checkpoint(
                name=suite.name,
                validation_definitions=[validation],
                actions=[UpdateDataDocsAction(name="update-data-docs")],
                result_format={"result_format": "SUMMARY"},
            )
        )
        run = checkpoint.run(batch_parameters={"dataframe": batch})
        (result,) = run.run_results.values()
        write_offline_index(gx_root / "gx", data_docs_index(gx_root).parent)
    return result


def keep_added_up(
    gx_root: Path,
    build_suite: Callable[[], gx.ExpectationSuite],
    outcomes: list[ExpectationOutcome],
    *,
    run_name: str,
    run_time: datetime,
    batch: str,
) -> None:
    """Store a verdict GX did not compute in one validation (its outcomes added up from
    shards, :mod:`pipelines.validate_shards`) as a validation result of the suite
    ``build_suite`` makes, under ``<gx_root>/gx``, and rebuild the Data Docs: it reads like
    any other result there."""
    files = gx.get_context(mode="file", project_root_dir=str(gx_root))
    files.variables.progress_bars = ProgressBarsConfig(globally=False)
    suite = files.suites.add_or_update(build_suite())
    if len(suite.expectations) != len(outcomes):
        raise ValueError(
            f"{len(outcomes)} outcomes for the {len(suite.expectations)} of {suite.name}"
        )
    results = [
        ExpectationValidationResult(
            success=o.success,
            expectation_config=expectation.configuration,
            result=_result_dict(o),
            exception_info={
                "raised_exception": bool(o.error),
                "exception_message": o.error,
                "exception_traceback": None,
            },
        )
        for expectation, o in zip(suite.expectations, outcomes, strict=True)
    ]
    passed = sum(o.success for o in outcomes)
    run = RunIdentifier(run_name=run_name, run_time=run_time)
    files.validation_results_store.set(
        ValidationResultIdentifier(ExpectationSuiteIdentifier(name=suite.name), run, batch),
        ExpectationSuiteValidationResult(
            success=passed == len(outcomes),
            results=results,
            suite_name=suite.name,
            statistics={
                "evaluated_expectations": len(outcomes),
                "successful_expectations": passed,
                "unsuccessful_expectations": len(outcomes) - passed,
                "success_percent": 100.0 * passed / len(outcomes) if outcomes else None,
            },
            meta={
                "run_id": run,
                "great_expectations_version": gx.__version__,
                "batch_markers": {},
                "added_up_from": batch,
            },
        ),
    )
    files.build_data_docs()
    write_offline_index(gx_root / "gx", data_docs_index(gx_root).parent)


def _result_dict(o: ExpectationOutcome) -> dict[str, object]:
    values = {
        "element_count": o.element_count,
        "missing_count": o.missing_count,
        "unexpected_count": o.unexpected_count,
        "unexpected_percent": o.unexpected_percent,
        "observed_value": o.observed,
    }
    out: dict[str, object] = {k: v for k, v in values.items() if v is not None}
    if o.unexpected_count is not None:
        out["partial_unexpected_list"] = o.examples
    return out


def _outcomes(result: gx.core.ExpectationSuiteValidationResult) -> list[ExpectationOutcome]:
    outcomes = []
    for r in result.results:
        config = r.expectation_config
        assert config is not None  # set on every result of a suite validation
        exc = r.exception_info or {}
        raised = exc.get("raised_exception", False)
        outcomes.append(
            ExpectationOutcome(
                expectation=config.type,
                column=config.kwargs.get("column")
                or (
                    f"{config.kwargs['column_A']} = {config.kwargs['column_B']}"
                    if "column_A" in config.kwargs
                    else None
                ),
                # A malformed expectation reports failure instead of raising: surface it.
                success=bool(r.success) and not raised,
                unexpected_count=r.result.get("unexpected_count"),
                unexpected_percent=r.result.get("unexpected_percent"),
                error=str(exc.get("exception_message")) if raised else None,
                observed=r.result.get("observed_value"),
                examples=list(r.result.get("partial_unexpected_list") or []),
                element_count=r.result.get("element_count"),
                missing_count=r.result.get("missing_count"),
            )
        )
    return outcomes


def describe(o: ExpectationOutcome) -> str:
    """One failed expectation in words: which, on what, how many, and a few examples."""
    text = f"expectation {o.expectation}" + (f" on column {o.column!r}" if o.column else "")
    if o.unexpected_count is not None and o.unexpected_percent is not None:
        text += f" failed: {o.unexpected_count} unexpected ({o.unexpected_percent:.3f}%)"
    elif o.observed is not None:
        text += f" failed: observed {o.observed}"
    else:
        text += " failed"
    if o.examples:
        text += f", e.g. {o.examples[:3]}"
    return text + (f" (error: {o.error})" if o.error else "")
