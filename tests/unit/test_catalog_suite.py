"""The catalog suite: ids present and unique, ``available`` boolean, attributes in their domain."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from pipelines.sources.files import read_catalog_csv as read_catalog
from pipelines.suites.catalog import validate_catalog


def _catalog(tmp_path: Path, text: str, name: str = "items") -> pa.Table:
    path = tmp_path / f"{name}.csv"
    path.write_text(text)
    id_column = "item_id" if name == "items" else "user_id"
    return read_catalog(path, id_column)


GOOD = "item_id,category,available\ni1,books,true\ni2,games,false\ni3,books,true\n"


def test_a_good_catalog_passes(tmp_path: Path) -> None:
    table = _catalog(tmp_path, GOOD)
    assert validate_catalog(table, name="items", id_column="item_id") == []


@pytest.mark.parametrize(
    ("text", "expectation"),
    [
        ("item_id,available\ni1,true\ni1,false\n", "expect_column_values_to_be_unique"),
        ("item_id,available\ni1,true\n  ,false\n", "expect_column_values_to_not_be_null"),
        ("item_id,available\ni1,true\ni2,maybe\n", "on column 'available'"),
    ],
    ids=["duplicate id", "blank id", "available not boolean"],
)
def test_bad_catalogs_fail_naming_the_expectation(
    tmp_path: Path, text: str, expectation: str
) -> None:
    failures = validate_catalog(_catalog(tmp_path, text), name="items", id_column="item_id")
    assert any(expectation in f for f in failures), failures


def test_attribute_domain_drift_against_the_previous_snapshot(tmp_path: Path) -> None:
    previous = _catalog(tmp_path, GOOD)
    rows = "".join(f"n{k},{'toys' if k < 3 else 'books'},true\n" for k in range(20))
    drifted = _catalog(tmp_path, "item_id,category,available\n" + rows)
    failures = validate_catalog(drifted, name="items", id_column="item_id", previous=previous)
    assert any("on column 'category'" in f and "toys" in f for f in failures), failures
    # 1 new value in 20 rows (5%) is within the default 5% allowance
    rows = "".join(f"n{k},{'toys' if k < 1 else 'books'},true\n" for k in range(20))
    fine = _catalog(tmp_path, "item_id,category,available\n" + rows)
    assert validate_catalog(fine, name="items", id_column="item_id", previous=previous) == []
