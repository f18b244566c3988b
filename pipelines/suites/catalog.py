"""The catalog suite: a new users or items snapshot, checked against the previous one."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import great_expectations as gx
import polars as pl
import pyarrow as pa

from features.contracts import C
from pipelines.suites.runner import describe, run_expectations

MAX_DOMAIN_VALUES = 1000
"""Attributes with more distinct values than this are free text, not a domain."""


def catalog_suite(
    name: str, id_column: str, columns: Sequence[str], domains: Mapping[str, list[str]],
    max_new_value_share: float,
) -> gx.ExpectationSuite:  # fmt: skip
    """A catalog snapshot: ids present and unique, ``available`` (items) a boolean, and each
    attribute with a known domain (the previous snapshot's values) mostly within it."""
    e = gx.expectations
    suite = gx.ExpectationSuite(name=f"{name}_catalog")
    suite.add_expectation(e.ExpectColumnValuesToNotBeNull(column=id_column))
    suite.add_expectation(e.ExpectColumnValuesToBeUnique(column=id_column))
    if C.available in columns:
        suite.add_expectation(e.ExpectColumnValuesToNotBeNull(column=C.available))
        suite.add_expectation(
            e.ExpectColumnValuesToBeInSet(column=C.available, value_set=[True, False])
        )
    for column, values in domains.items():
        suite.add_expectation(
            e.ExpectColumnValuesToBeInSet(
                column=column, value_set=values, mostly=1.0 - max_new_value_share
            )
        )
    return suite


def validate_catalog(
    table: pa.Table,
    *,
    name: str,
    id_column: str,
    previous: pa.Table | None = None,
    max_new_value_share: float = 0.05,
    gx_root: Path | None = None,
) -> list[str]:
    """Run :func:`catalog_suite` on a new snapshot; returns the failures (empty: it may be used).

    Domains come from ``previous`` (the last accepted snapshot): string attributes present in
    both with at most :data:`MAX_DOMAIN_VALUES` distinct values before.
    """
    frame = pl.DataFrame(table)
    domains: dict[str, list[str]] = {}
    if previous is not None:
        before = pl.DataFrame(previous)
        for column, dtype in before.schema.items():
            if column == id_column or dtype != pl.String or frame.schema.get(column) != pl.String:
                continue
            values = before[column].drop_nulls().unique()
            if 0 < values.len() <= MAX_DOMAIN_VALUES:
                domains[column] = sorted(values.to_list())
    outcomes = run_expectations(
        frame.to_pandas(),
        lambda: catalog_suite(name, id_column, frame.columns, domains, max_new_value_share),
        gx_root,
    )
    return [describe(o) for o in outcomes if not o.success]
