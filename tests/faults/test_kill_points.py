"""Every stage commits once: a kill before any write of any stage, then the scheduler's next
attempt, ends exactly where a clean run does (the catalogue and its judgement are
:mod:`bench.faults`; this runs it on the ``tiny`` preset, one case per stage)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import faults

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory, tiny_landing: Path) -> faults.Catalogue:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_SQLALCHEMYSTORE_POOLCLASS", "NullPool")
        return faults.clean_run(tmp_path_factory.mktemp("catalogue"), tiny_landing)


def test_the_clean_run_writes_what_the_catalogue_expects(catalogue: faults.Catalogue) -> None:
    points = {stage: catalogue.kill_points(stage) for stage in faults.STAGES}
    labels = {stage: {label for _, label in found} for stage, found in points.items()}
    # The commits each stage is built around are among its kill points.
    assert "warehouse commit" in labels["extract"]
    assert "warehouse commit" in labels["validate"]
    assert any(
        x.startswith("rename to ") and x.endswith(" in lake.commit") for x in labels["validate"]
    )
    assert "warehouse commit" in labels["features"]
    assert {"mlflow.create_run", "warehouse commit", "mlflow.set_registered_model_alias",
            "mlflow.set_terminated"} <= labels["train"]  # fmt: skip
    assert {
        f"rename to {name} in scored.commit"
        for name in ("recommendations.parquet", "similar_items.parquet", "manifest.json")
    } <= labels["score"]
    assert {"serving.point_views", "warehouse commit"} <= labels["publish"]
    assert sum(map(len, points.values())) >= 50


@pytest.mark.parametrize("stage", faults.STAGES)
def test_a_kill_before_any_write_then_a_rerun_equals_a_clean_run(
    catalogue: faults.Catalogue, stage: str
) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_SQLALCHEMYSTORE_POOLCLASS", "NullPool")
        outcomes = [faults.kill(catalogue, stage, i, label) for i, label in
                    catalogue.kill_points(stage)]  # fmt: skip
    failed = [f"#{o.write} {o.label}: {'; '.join(o.problems)}" for o in outcomes if not o.ok]
    assert not failed, "\n".join(failed)
    assert outcomes
