"""``prefect.yaml`` deploys for real (``prefect deploy --all`` against the test server), every
deployment's flow loads with typed parameters, and the nightly's cron creates scheduled runs."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def _declared() -> list[dict[str, Any]]:
    doc = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deployments: list[dict[str, Any]] = doc["deployments"]
    return deployments


async def _deployed(pool: str) -> tuple[list[Any], list[Any]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.settings import get_current_settings

    async with get_client() as client:
        with contextlib.suppress(ObjectAlreadyExists):
            await client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        env = {**os.environ, "PREFECT_API_URL": str(get_current_settings().api.url)}
        done = subprocess.run(
            [str(Path(sys.executable).with_name("prefect")), "--no-prompt", "deploy", "--all"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        deployments = await client.read_deployments()
        nightly = next(d for d in deployments if d.name == "nightly")
        # What the scheduler service does on its loop, asked for directly.
        await client.request(
            "POST", "/deployments/{id}/schedule", path_params={"id": nightly.id},
            json={"min_runs": 3},
        )  # fmt: skip
        runs = await client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[nightly.id]))
        )
    return deployments, runs


def test_every_deployment_loads_and_the_nightly_cron_schedules_runs(
    prefect_harness: None,
) -> None:
    from prefect.flows import load_flow_from_entrypoint

    declared = _declared()
    deployments, runs = asyncio.run(_deployed(declared[0]["work_pool"]["name"]))
    by_name = {d.name: d for d in deployments}
    assert set(by_name) == {d["name"] for d in declared}
    for spec in declared:
        deployment = by_name[spec["name"]]
        assert deployment.description, spec["name"]
        flow: Any = load_flow_from_entrypoint(str(ROOT / spec["entrypoint"]))
        assert deployment.parameter_openapi_schema is not None
        assert set(deployment.parameter_openapi_schema["properties"]) == set(
            flow.parameters.properties
        )
    backfill = by_name["backfill"].parameter_openapi_schema
    assert backfill is not None
    assert set(backfill["required"]) == {"since", "until"}
    assert backfill["properties"]["since"]["format"] == "date"
    nightly = by_name["nightly"]
    assert nightly.global_concurrency_limit is not None
    assert nightly.global_concurrency_limit.limit == 1
    assert [s.schedule.cron for s in nightly.schedules] == ["0 2 * * *"]
    scheduled = [r for r in runs if r.state_name == "Scheduled"]
    assert len(scheduled) >= 3
    starts = sorted(r.expected_start_time for r in scheduled if r.expected_start_time)
    assert all((t.hour, t.minute) == (2, 0) for t in starts)
    assert all((b - a).total_seconds() == 86400 for a, b in itertools.pairwise(starts))
